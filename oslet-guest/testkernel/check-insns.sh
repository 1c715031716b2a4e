#!/bin/sh
# check-insns.sh ELF: fail if the test kernel contains an instruction that
# KVM's instruction emulator cannot run in guest ring 0 on the project's
# machines (see /work/shared/KVM-NOTES.md): int3/int n, popcnt, fwait and
# any x87, xsave/xrstor/fxsave/fxrstor, cmpxchg16b, rdrand/rdseed, MXCSR
# access, any SSE/AVX/MMX instruction except a plain move to or from memory,
# and undecodable bytes. Disassembles .text as x86-64, .boot32 as i386 and
# the AP trampoline (.trampoline, up to its data) as 16-bit code.
# Needs binutils (objdump, nm) and awk. Exit 0 = clean, 1 = found, 2 = usage.
set -eu
if [ $# -ne 1 ] || [ ! -f "$1" ]; then
    echo "usage: $0 ELF" >&2
    exit 2
fi
elf=$1
tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT

objdump -d --no-show-raw-insn -j .text "$elf" >>"$tmp"
if objdump -h "$elf" | grep -q ' \.boot32 '; then
    objdump -d --no-show-raw-insn -m i386 -j .boot32 "$elf" >>"$tmp"
fi
if objdump -h "$elf" | grep -q ' \.trampoline '; then
    stop=$(nm "$elf" | awk '$3 == "oslet_tramp_gdt_ptr" { print "0x" $1 }')
    if [ -n "$stop" ]; then
        objdump -D --no-show-raw-insn -m i8086 -j .trampoline --stop-address="$stop" "$elf" >>"$tmp"
    else
        echo "check-insns: warning: no oslet_tramp_gdt_ptr symbol, .trampoline not checked" >&2
    fi
fi

awk '
function fail(why) { bad++; printf "check-insns: %s: %s\n", why, $0 }
# instruction lines: "  addr:<TAB>insn operands"
/^ *[0-9a-f]+:\t/ {
    line = $0
    sub(/^ *[0-9a-f]+:\t */, "", line)
    n = split(line, w, /[ \t]+/)
    i = 1
    while (i <= n && w[i] ~ /^(rep|repz|repnz|repe|repne|lock|data16|data32|addr32|addr16|cs|ds|es|ss|fs|gs|notrack|bnd|rex(\.[WRXB]+)?|xacquire|xrelease)$/) i++
    m = w[i]
    total++
    if (line ~ /\(bad\)/) { fail("undecodable"); next }
    if (m ~ /^int(3|o)?$/ || m ~ /^icebp$/) { fail("software interrupt"); next }
    if (m ~ /^popcnt/) { fail("popcnt"); next }
    if (m ~ /^f/ || m == "wait") { fail("x87/fwait"); next }
    if (m ~ /^(xsave|xrstor|fxsave|fxrstor)/) { fail("xsave family"); next }
    if (m ~ /^cmpxchg16b/) { fail("cmpxchg16b"); next }
    if (m ~ /^(rdrand|rdseed)/) { fail("rdrand/rdseed"); next }
    if (m ~ /^(ldmxcsr|stmxcsr|vldmxcsr|vstmxcsr|emms|femms)$/) { fail("SSE/MMX state"); next }
    if (line ~ /%(x|y|z)mm[0-9]/ || line ~ /%mm[0-7]/ || line ~ /%k[0-7]/) {
        if (m ~ /^(movups|movaps|movupd|movapd|movdqu|movdqa|movq|movd|movss|movsd|movlps|movhps|movlpd|movhpd)$/ && line ~ /\(/)
            next
        fail("SSE/AVX/MMX other than a plain memory move")
        next
    }
}
END {
    if (total == 0) { print "check-insns: no instructions found (not an ELF with .text?)"; exit 1 }
    if (bad) { printf "check-insns: %d forbidden instruction(s) in %d\n", bad, total; exit 1 }
    printf "check-insns: ok, %d instructions checked\n", total
}' "$tmp"
