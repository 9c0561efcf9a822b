//! Trace export: a 3-node cluster exports the spans of one activation made through a
//! follower to an OTLP collector stub, with the trace context carried over the gRPC
//! forward to the leader.

use kms_tests::cluster::LocalCluster;
use kms_tests::otlp::{Collector, ReceivedSpan};
use std::time::{Duration, Instant};

const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn wait_for(collector: &Collector, done: impl Fn(&[ReceivedSpan]) -> bool) -> Vec<ReceivedSpan> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let spans = collector.spans();
        if done(&spans) || Instant::now() > deadline {
            return spans;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn one_activation_through_a_follower_is_one_trace_across_two_nodes() {
    let collector = Collector::start();
    let endpoint = collector.endpoint();
    let mut cluster = LocalCluster::start(3, &["--otlp-endpoint", &endpoint]);
    let leader = cluster.wait_leader(Duration::from_secs(10));
    let follower = (0..3).find(|i| *i != leader).expect("a follower");
    let (_, code) = cluster.nodes[follower].activate(&["--product", "Windows 10 Enterprise"]);
    assert_eq!(code, 3, "one client is below the minimum count: exit 3");

    let follower_id = (follower + 1).to_string();
    let leader_id = (leader + 1).to_string();
    let spans = wait_for(&collector, |s| {
        s.iter()
            .any(|x| x.name == "cluster.forward" && x.kind == SERVER && x.instance == leader_id)
            && s.iter().any(|x| x.name == "kms.respond")
    });
    let activation = spans
        .iter()
        .find(|s| s.name == "kms.activation" && s.instance == follower_id)
        .unwrap_or_else(|| panic!("no activation span from node {follower_id}: {spans:#?}"));
    assert_eq!(activation.kind, SERVER);
    assert!(
        activation.parent_span_id.is_empty(),
        "activation is a root span"
    );
    let trace: Vec<&ReceivedSpan> = spans
        .iter()
        .filter(|s| s.trace_id == activation.trace_id)
        .collect();
    let find = |name: &str, instance: &str| {
        trace
            .iter()
            .find(|s| s.name == name && s.instance == instance)
            .copied()
            .unwrap_or_else(|| panic!("no {name} span from node {instance} in {trace:#?}"))
    };
    for step in ["kms.decode", "kms.replicate", "kms.respond"] {
        assert_eq!(
            find(step, &follower_id).parent_span_id,
            activation.span_id,
            "{step} is a child of the activation"
        );
    }
    let replicate = find("kms.replicate", &follower_id);
    let commit = find("raft.commit", &follower_id);
    assert_eq!(commit.parent_span_id, replicate.span_id);
    let forward_out = trace
        .iter()
        .find(|s| s.name == "cluster.forward" && s.kind == CLIENT)
        .expect("client forward span");
    assert_eq!(forward_out.instance, follower_id);
    assert_eq!(forward_out.parent_span_id, commit.span_id);
    let forward_in = trace
        .iter()
        .find(|s| s.name == "cluster.forward" && s.kind == SERVER)
        .expect("the leader's forward span is in the same trace");
    assert_eq!(forward_in.instance, leader_id);
    assert_eq!(
        forward_in.parent_span_id, forward_out.span_id,
        "trace context crossed the gRPC forward"
    );
    // Raft RPCs have spans too (client side on the leader, server side on followers).
    assert!(spans
        .iter()
        .any(|s| s.name == "raft.append_entries" && s.kind == CLIENT && s.instance == leader_id));
    assert!(spans
        .iter()
        .any(|s| s.name == "raft.append_entries" && s.kind == SERVER && s.instance != leader_id));
    for n in &mut cluster.nodes {
        n.stop();
    }
}
