/*
 * /init of oslet's test kernel (images/build-testkernel.sh): a static binary with no
 * libc, built with `gcc -static -nostdlib`. It writes one line to the console (the
 * kernel opened /dev/console as fds 0-2) and then waits for ever: PID 1 must not
 * exit, or the kernel panics.
 *
 * On hosts whose KVM emulates guest ring 0 (../shared/KVM-NOTES.md) its first
 * syscall never reaches the kernel, so this line is never printed there; the kernel's
 * "Run /init as init process" is as far as a boot gets. Under QEMU with software
 * emulation (TCG), or on a host with hardware virtualization, the line appears.
 */

static long syscall3(long nr, long a, long b, long c)
{
	long ret;

	__asm__ volatile("syscall"
			 : "=a"(ret)
			 : "a"(nr), "D"(a), "S"(b), "d"(c)
			 : "rcx", "r11", "memory");
	return ret;
}

#define SYS_write 1
#define SYS_pause 34

static const char line[] = "oslet-test-init: PID 1 running\n";

void init_main(void)
{
	syscall3(SYS_write, 1, (long)line, sizeof(line) - 1);
	for (;;)
		syscall3(SYS_pause, 0, 0, 0);
}

/* The entry point: a 16-byte aligned stack for init_main, no frame to return to. */
__asm__(".globl _start\n"
	"_start:\n"
	"	xorl %ebp, %ebp\n"
	"	andq $-16, %rsp\n"
	"	call init_main\n"
	"	ud2\n");
