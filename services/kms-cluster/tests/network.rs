//! Three in-process Raft nodes talking over the real gRPC network layer on ephemeral ports:
//! election, forwarding command batches (applied at the leader, leader hint from a follower),
//! status, convergence of all replicas' [`HostState`], and the typed errors of the wire.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kms_cluster::grpc;
use kms_cluster::network::{ClusterClient, ForwardOutcome, GrpcNetworkFactory, NetError};
use kms_cluster::{open_stores, NodeId, Raft, StateHandle};
use kms_state::{Activation, Command, CommandResult, HostState, Outcome};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Short timings so elections and replication finish quickly in tests.
fn test_config() -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "kms-test".to_string(),
        heartbeat_interval: 50,
        election_timeout_min: 150,
        election_timeout_max: 300,
        ..Default::default()
    };
    Arc::new(config.validate().expect("valid raft config"))
}

/// One running node: Raft, its gRPC server, its state handle and its data directory.
struct TestNode {
    id: NodeId,
    addr: String,
    raft: Raft,
    state: StateHandle,
    stop: Option<oneshot::Sender<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    _dir: TempDir,
}

impl TestNode {
    async fn start(id: NodeId) -> TestNode {
        let dir = tempfile::tempdir().expect("temp dir");
        let (log, sm) =
            open_stores(dir.path(), kms_cluster::WalOptions::default()).expect("open raft stores");
        let state = sm.handle();
        let raft = Raft::new(id, test_config(), GrpcNetworkFactory::default(), log, sm)
            .await
            .expect("start raft");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("local addr").to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(grpc::serve(listener, raft.clone(), async move {
            let _ = stopped.await;
        }));
        TestNode {
            id,
            addr,
            raft,
            state,
            stop: Some(stop),
            server,
            _dir: dir,
        }
    }

    async fn shutdown(mut self) {
        self.raft.shutdown().await.expect("raft shutdown");
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server
            .await
            .expect("server task")
            .expect("server result");
    }
}

fn activation(n: u32) -> Command {
    Command::Activation(Activation {
        request_id: Uuid::new_v4(),
        time_ms: 1_700_000_000_000 + u64::from(n) * 1_000,
        count_group: Some("windows".to_string()),
        product_group: Some("windows-10-11".to_string()),
        kms_counted_id: Uuid::new_v4(),
        application_id: Uuid::new_v4(),
        sku_id: Uuid::new_v4(),
        cmid: Uuid::new_v4(),
        machine_name: format!("pc-{n}.example.test"),
        client_vm: n.is_multiple_of(2),
        license_state: kms_protocol::LicenseState::InitialGrace,
        grace_minutes: 43_200,
        required_count: 25,
        protocol_major: 6,
        answered_by: 1,
        outcome: Outcome::Answered,
    })
}

/// Polls `f` until it returns `Some`, failing after `timeout`.
async fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_elect_forward_and_converge() {
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(TestNode::start(id).await);
    }
    let members: BTreeMap<NodeId, String> = nodes.iter().map(|n| (n.id, n.addr.clone())).collect();

    // Initialize through the Cluster service of node 1.
    ClusterClient::connect(&nodes[0].addr)
        .initialize(members.clone())
        .await
        .expect("initialize");

    // A leader every node agrees on.
    let leader_id = wait_for("a leader", Duration::from_secs(10), || {
        let leaders: Vec<Option<NodeId>> = nodes
            .iter()
            .map(|n| n.raft.metrics().borrow().current_leader)
            .collect();
        match leaders[0] {
            Some(l) if leaders.iter().all(|x| *x == Some(l)) => Some(l),
            _ => None,
        }
    })
    .await;
    let leader = nodes.iter().find(|n| n.id == leader_id).unwrap();
    let follower = nodes.iter().find(|n| n.id != leader_id).unwrap();

    // Status over gRPC.
    let status = ClusterClient::connect(&leader.addr)
        .status()
        .await
        .expect("status");
    assert_eq!(status.node_id, leader_id);
    assert_eq!(status.current_leader, Some(leader_id));
    assert_eq!(status.role(), "leader");
    assert_eq!(
        status.voters(),
        members
            .keys()
            .copied()
            .collect::<std::collections::BTreeSet<_>>()
    );
    assert_eq!(status.nodes(), members);
    let replication = status
        .replication
        .as_ref()
        .expect("a leader reports replication");
    for id in members.keys().filter(|id| **id != leader_id) {
        assert!(replication.contains_key(id), "{replication:?}");
    }

    // Batches to the leader are applied.
    let leader_client = ClusterClient::connect(&leader.addr);
    let mut n = 0;
    for batch_len in [1usize, 3, 5] {
        let batch: Vec<Command> = (0..batch_len)
            .map(|_| {
                n += 1;
                activation(n)
            })
            .collect();
        match leader_client.forward(&batch).await.expect("forward") {
            ForwardOutcome::Applied(results) => {
                assert_eq!(results.len(), batch_len);
                for r in &results {
                    assert!(
                        matches!(r, CommandResult::Activation(a) if !a.duplicate),
                        "{r:?}"
                    );
                }
            }
            other => panic!("leader did not apply: {other:?}"),
        }
    }

    // Re-proposing an applied command is a duplicate (idempotent by request id).
    let again = activation(100);
    let ForwardOutcome::Applied(first) = leader_client
        .forward(std::slice::from_ref(&again))
        .await
        .expect("forward")
    else {
        panic!("not applied");
    };
    let ForwardOutcome::Applied(second) = leader_client
        .forward(std::slice::from_ref(&again))
        .await
        .expect("forward")
    else {
        panic!("not applied");
    };
    assert!(matches!(&first[0], CommandResult::Activation(a) if !a.duplicate));
    assert!(matches!(&second[0], CommandResult::Activation(a) if a.duplicate));

    // A follower answers with the leader hint.
    let outcome = ClusterClient::connect(&follower.addr)
        .forward(&[activation(200)])
        .await
        .expect("forward to follower");
    assert_eq!(
        outcome,
        ForwardOutcome::NotLeader {
            leader_id: Some(leader_id),
            leader_addr: Some(leader.addr.clone()),
        }
    );

    // Membership changes on a follower are refused with the hint too.
    let err = ClusterClient::connect(&follower.addr)
        .change_membership(members.keys().copied().collect())
        .await
        .expect_err("follower cannot change membership");
    match err {
        NetError::NotLeader {
            leader_id: id,
            leader_addr,
        } => {
            assert_eq!(id, Some(leader_id));
            assert_eq!(leader_addr.as_deref(), Some(leader.addr.as_str()));
        }
        other => panic!("unexpected error {other:?}"),
    }
    // ... and accepted (as a no-op) by the leader.
    leader_client
        .change_membership(members.keys().copied().collect())
        .await
        .expect("change membership on leader");

    // All replicas converge to the same state.
    let expected: HostState = leader.state.read(|s| s.clone());
    assert_eq!(expected.stats().total, 10, "{:?}", expected.stats());
    wait_for("replicas to converge", Duration::from_secs(5), || {
        let states: Vec<HostState> = nodes.iter().map(|n| n.state.read(|s| s.clone())).collect();
        states.iter().all(|s| *s == states[0]).then_some(())
    })
    .await;
    assert_eq!(nodes[0].state.read(|s| s.clone()), expected);

    for node in nodes {
        node.shutdown().await;
    }
}

/// A node nobody listens on: calls fail as transport errors, quickly.
#[tokio::test]
async fn unreachable_node_is_a_transport_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let err = ClusterClient::connect(&addr)
        .status()
        .await
        .expect_err("nobody listens");
    assert!(matches!(err, NetError::Transport(_)), "{err:?}");

    let err = ClusterClient::connect("not a uri\n")
        .status()
        .await
        .expect_err("invalid address");
    assert!(matches!(err, NetError::InvalidAddress { .. }), "{err:?}");
}

/// A learner joining after the leader purged its log must receive the snapshot through
/// `install_snapshot` over gRPC, then the rest of the log; it ends with the leader's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learner_catches_up_through_snapshot() {
    let leader = TestNode::start(1).await;
    let client = ClusterClient::connect(&leader.addr);
    client
        .initialize(BTreeMap::from([(1, leader.addr.clone())]))
        .await
        .expect("initialize");
    wait_for("leader", Duration::from_secs(10), || {
        (leader.raft.metrics().borrow().current_leader == Some(1)).then_some(())
    })
    .await;

    let batch: Vec<Command> = (0..20).map(activation).collect();
    assert!(matches!(
        client.forward(&batch).await.expect("forward"),
        ForwardOutcome::Applied(_)
    ));
    leader
        .raft
        .trigger()
        .snapshot()
        .await
        .expect("trigger snapshot");
    let snapshot = wait_for("snapshot", Duration::from_secs(5), || {
        leader.raft.metrics().borrow().snapshot
    })
    .await;
    leader
        .raft
        .trigger()
        .purge_log(snapshot.index)
        .await
        .expect("purge");
    wait_for("purge", Duration::from_secs(5), || {
        (leader.raft.metrics().borrow().purged == Some(snapshot)).then_some(())
    })
    .await;
    // One more entry after the snapshot.
    client.forward(&[activation(99)]).await.expect("forward");

    let learner = TestNode::start(2).await;
    client
        .add_learner(2, &learner.addr)
        .await
        .expect("add learner");
    let expected = leader.state.read(|s| s.clone());
    assert_eq!(expected.stats().total, 21);
    wait_for("learner state", Duration::from_secs(5), || {
        (learner.state.read(|s| s.clone()) == expected).then_some(())
    })
    .await;
    assert!(learner.raft.metrics().borrow().snapshot.is_some());

    learner.shutdown().await;
    leader.shutdown().await;
}

/// Failures cross as typed errors: a second initialize is a refusal, a request of an unknown
/// schema version is `FailedPrecondition` with a schema-mismatch detail, a malformed request is
/// `InvalidArgument`, and a stopped Raft reaches the peer's openraft as
/// `RemoteError(Fatal::Stopped)` and a forwarding node as "unavailable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_cross_typed() {
    use kms_cluster::pb::{self, WireError};
    use kms_cluster::Vote;
    use openraft::error::{Fatal, RPCError, RaftError};
    use openraft::network::{RPCOption, RaftNetwork};
    use openraft::raft::VoteRequest;

    let mut node = TestNode::start(1).await;
    let client = ClusterClient::connect(&node.addr);
    let members = BTreeMap::from([(1, node.addr.clone())]);
    client
        .initialize(members.clone())
        .await
        .expect("initialize");
    let err = client
        .initialize(members)
        .await
        .expect_err("initialized twice");
    assert!(
        matches!(err, NetError::Remote(WireError::Refused { .. })),
        "{err:?}"
    );

    let mut raw = pb::raft_client::RaftClient::connect(format!("http://{}", node.addr))
        .await
        .expect("connect");
    let mut request = pb::VoteRequest::from(&VoteRequest::new(Vote::new(9, 2), None));
    request.schema_version = pb::SCHEMA_VERSION + 1;
    let status = raw.vote(request).await.expect_err("unknown version");
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        WireError::from_status(&status),
        Some(Ok(WireError::SchemaMismatch {
            got: pb::SCHEMA_VERSION + 1,
            min: pb::MIN_SCHEMA_VERSION,
            max: pb::SCHEMA_VERSION,
        }))
    );
    let status = raw
        .vote(pb::VoteRequest {
            schema_version: pb::SCHEMA_VERSION,
            vote: None,
            last_log_id: None,
        })
        .await
        .expect_err("no vote");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert!(status.message().contains("VoteRequest.vote"), "{status:?}");

    // The gRPC server keeps serving after the Raft core stopped.
    node.raft.shutdown().await.expect("raft shutdown");
    let mut network =
        kms_cluster::network::GrpcNetwork::new(1, kms_cluster::Node::new(node.addr.clone()));
    let err = network
        .vote(
            VoteRequest::new(Vote::new(9, 2), None),
            RPCOption::new(Duration::from_secs(5)),
        )
        .await
        .expect_err("raft stopped");
    assert!(
        matches!(&err, RPCError::RemoteError(e) if e.source == RaftError::Fatal(Fatal::Stopped)),
        "{err:?}"
    );
    // The same error ends an append-entries stream; the next append opens a new stream and
    // gets it again.
    for _ in 0..2 {
        let err = network
            .append_entries(empty_append(), RPCOption::new(Duration::from_secs(5)))
            .await
            .expect_err("raft stopped");
        assert!(
            matches!(&err, RPCError::RemoteError(e) if e.source == RaftError::Fatal(Fatal::Stopped)),
            "{err:?}"
        );
    }
    let err = client
        .forward(&[activation(1)])
        .await
        .expect_err("raft stopped");
    assert!(
        matches!(err, NetError::Remote(WireError::Unavailable { .. })),
        "{err:?}"
    );

    if let Some(stop) = node.stop.take() {
        let _ = stop.send(());
    }
    node.server
        .await
        .expect("server task")
        .expect("server result");
}

/// A heartbeat-shaped append from a would-be leader of term 5 (node 2): accepted by a node
/// that has no log yet.
fn empty_append() -> openraft::raft::AppendEntriesRequest<kms_cluster::TypeConfig> {
    openraft::raft::AppendEntriesRequest {
        vote: kms_cluster::Vote::new_committed(5, 2),
        prev_log_id: None,
        entries: vec![],
        leader_commit: None,
    }
}

/// Sends `n` appends of [`empty_append`] through `network`; each must succeed.
async fn appends_succeed(network: &mut kms_cluster::network::GrpcNetwork, n: usize) {
    use openraft::network::{RPCOption, RaftNetwork};
    for _ in 0..n {
        let reply = network
            .append_entries(empty_append(), RPCOption::new(Duration::from_secs(5)))
            .await
            .expect("append");
        assert_eq!(reply, openraft::raft::AppendEntriesResponse::Success);
    }
}

/// Appends go over one long-lived stream, answered in order; stopping the server ends the open
/// stream instead of waiting for the sender to close it, so a follower's shutdown never hangs
/// on its leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_stream_and_the_server_stops_with_a_stream_open() {
    use openraft::network::{RPCOption, RaftNetwork};
    use openraft::raft::AppendEntriesResponse;

    let mut node = TestNode::start(1).await;
    let mut network =
        kms_cluster::network::GrpcNetwork::new(1, kms_cluster::Node::new(node.addr.clone()));
    appends_succeed(&mut network, 3).await;
    // A lower term than the one just accepted: the reply says so (a stream carries every
    // kind of reply, not only success).
    let mut stale = empty_append();
    stale.vote = kms_cluster::Vote::new_committed(4, 3);
    let reply = network
        .append_entries(stale, RPCOption::new(Duration::from_secs(5)))
        .await
        .expect("append");
    assert!(
        matches!(reply, AppendEntriesResponse::HigherVote(v) if v == kms_cluster::Vote::new_committed(5, 2)),
        "{reply:?}"
    );

    node.raft.shutdown().await.expect("raft shutdown");
    if let Some(stop) = node.stop.take() {
        let _ = stop.send(());
    }
    // `network` still holds its stream open here.
    tokio::time::timeout(Duration::from_secs(10), &mut node.server)
        .await
        .expect("the server stopped although a stream was open")
        .expect("server task")
        .expect("server result");
    drop(network);
}

/// A peer that does not offer `AppendEntriesStream` (an older version): the first append finds
/// out and goes unary, every later one goes unary at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_fall_back_to_unary_when_the_peer_has_no_stream() {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use kms_cluster::pb;
    use openraft::raft::AppendEntriesResponse;
    use tonic::{Request, Response, Status};

    /// Answers unary appends with success and counts both kinds of call.
    #[derive(Default, Clone)]
    struct UnaryOnly {
        unary: Arc<AtomicUsize>,
        streams: Arc<AtomicUsize>,
    }

    #[tonic::async_trait]
    impl pb::raft_server::Raft for UnaryOnly {
        async fn vote(
            &self,
            _: Request<pb::VoteRequest>,
        ) -> Result<Response<pb::VoteResponse>, Status> {
            Err(Status::unimplemented("vote"))
        }
        async fn append_entries(
            &self,
            _: Request<pb::AppendEntriesRequest>,
        ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
            self.unary.fetch_add(1, Ordering::SeqCst);
            Ok(Response::new(pb::AppendEntriesResponse::from(
                &AppendEntriesResponse::<NodeId>::Success,
            )))
        }
        async fn install_snapshot(
            &self,
            _: Request<pb::InstallSnapshotRequest>,
        ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
            Err(Status::unimplemented("install_snapshot"))
        }
        type AppendEntriesStreamStream =
            tokio_stream::Empty<Result<pb::AppendEntriesResponse, Status>>;
        async fn append_entries_stream(
            &self,
            _: Request<tonic::Streaming<pb::AppendEntriesRequest>>,
        ) -> Result<Response<Self::AppendEntriesStreamStream>, Status> {
            self.streams.fetch_add(1, Ordering::SeqCst);
            Err(Status::unimplemented("an older kmsd"))
        }
    }

    let peer = UnaryOnly::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr").to_string();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(pb::raft_server::RaftServer::new(peer.clone()))
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async move {
                    let _ = stopped.await;
                },
            ),
    );
    let mut network = kms_cluster::network::GrpcNetwork::new(1, kms_cluster::Node::new(addr));
    appends_succeed(&mut network, 3).await;
    assert_eq!(
        peer.streams.load(Ordering::SeqCst),
        1,
        "asked for a stream once"
    );
    assert_eq!(
        peer.unary.load(Ordering::SeqCst),
        3,
        "every append went unary"
    );
    let _ = stop.send(());
    server.await.expect("server task").expect("server result");
}
