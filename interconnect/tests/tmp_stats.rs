use oslet_interconnect::hostile;
#[test]
fn stats() {
    let mut seed = 12345u64;
    let mut viol = std::collections::HashMap::new();
    let (mut recv, mut sent, mut steps) = (0, 0, 0);
    for _ in 0..400 {
        let data: Vec<u8> = (0..2000)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        let o = hostile::run(&data);
        *viol.entry(format!("{:?}", o.violation)).or_insert(0) += 1;
        recv += o.received;
        *viol.entry("reattach".into()).or_insert(0) += o.reattached;
        sent += o.sent;
        steps += o.steps;
    }
    eprintln!("{viol:?} recv {recv} sent {sent} steps {steps}");
}
