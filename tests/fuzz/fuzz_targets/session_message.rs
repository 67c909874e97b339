//! What crosses the control plane's streams: an agent's reports (read by the head), the head's
//! commands (read by agents) and cluster snapshots (read by the desktop app). Any bytes decode
//! or fail cleanly; a decoded message encodes to bytes that decode to the same encoding (bytes
//! are compared: NaN is not equal to itself); the head makes every report's figures finite; a
//! snapshot converts to the dashboard's form.
#![no_main]

use flotilla_proto::v1 as pb;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fn round_trip<M: Message + Default>(data: &[u8]) -> Option<M> {
    let m = M::decode(data).ok()?;
    let bytes = m.encode_to_vec();
    let again = M::decode(bytes.as_slice()).expect("an encoded message decodes");
    assert_eq!(
        again.encode_to_vec(),
        bytes,
        "a message survives encode -> decode"
    );
    Some(m)
}

fuzz_target!(|data: &[u8]| {
    if let Some(mut r) = round_trip::<pb::AgentReport>(data) {
        flotilla_head::fleet::sanitize_report(&mut r);
        for v in [
            r.advertised_cpus,
            r.capped_cpus,
            r.owner_load,
            r.contributed_cpu_seconds,
        ] {
            assert!(v.is_finite() && v >= 0.0, "{v}");
        }
        assert!(r.battery_percent.is_none_or(|b| (0.0..=100.0).contains(&b)));
    }
    let _ = round_trip::<pb::HeadCommand>(data);
    if let Some(s) = round_trip::<pb::ClusterSnapshot>(data) {
        let view = flotilla_head::ClusterSnapshot::of_fleet(&s);
        assert_eq!(view.agents.len(), s.nodes.len());
    }
});
