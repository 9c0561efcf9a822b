//! The wire schema's conversions (`kms_cluster::pb`): every domain value survives domain →
//! protobuf → bytes → protobuf → domain unchanged (proptest), bytes that are garbage or cut
//! short fail to decode with an error instead of a panic, and a message of an unknown schema
//! version is rejected.

use std::collections::{BTreeMap, BTreeSet};

use kms_cluster::network::ForwardOutcome;
use kms_cluster::pb::{self, FatalCause, PbError, WireError};
use kms_cluster::{
    ClusterRequest, Entry, EntryPayload, LogId, Membership, Node, NodeId, NodeStatus, SnapshotMeta,
    StoredMembership, Vote,
};
use kms_protocol::LicenseState;
use kms_state::{Activation, ActivationResult, Command, CommandResult, HostIdentity, Outcome};
use openraft::error::SnapshotMismatch;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, ServerState, SnapshotSegmentId};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use prost::Message;
use uuid::Uuid;

/// domain → pb → bytes → pb → domain.
fn round_trip<D, P>(value: &D) -> D
where
    P: Message + Default + for<'a> From<&'a D>,
    D: TryFrom<P, Error = PbError>,
{
    let bytes = P::from(value).encode_to_vec();
    let decoded = P::decode(bytes.as_slice()).expect("decode bytes");
    D::try_from(decoded).expect("convert to domain")
}

// --- strategies -----------------------------------------------------------------------------

fn log_id() -> impl Strategy<Value = LogId> {
    (any::<u64>(), any::<u64>(), any::<u64>())
        .prop_map(|(term, node, index)| LogId::new(CommittedLeaderId::new(term, node), index))
}

fn vote() -> impl Strategy<Value = Vote> {
    (any::<u64>(), any::<u64>(), any::<bool>()).prop_map(|(term, node, committed)| {
        if committed {
            Vote::new_committed(term, node)
        } else {
            Vote::new(term, node)
        }
    })
}

fn addr() -> impl Strategy<Value = String> {
    "[a-z0-9.-]{0,12}(:[0-9]{1,5})?"
}

/// Memberships of 0 to 3 configs (2 and 3: joint) over small ids, plus learners.
fn membership() -> impl Strategy<Value = Membership> {
    (
        vec(btree_set(0u64..8, 0..4), 0..=3),
        btree_set(0u64..12, 0..4),
        vec(addr(), 12),
    )
        .prop_map(|(configs, learners, addrs)| {
            let nodes: BTreeMap<NodeId, Node> = configs
                .iter()
                .flatten()
                .chain(learners.iter())
                .map(|id| (*id, Node::new(addrs[*id as usize].clone())))
                .collect();
            Membership::new(configs, nodes)
        })
}

fn stored_membership() -> impl Strategy<Value = StoredMembership> {
    (proptest::option::of(log_id()), membership())
        .prop_map(|(log_id, m)| StoredMembership::new(log_id, m))
}

fn snapshot_meta() -> impl Strategy<Value = SnapshotMeta> {
    (
        proptest::option::of(log_id()),
        stored_membership(),
        ".{0,20}",
    )
        .prop_map(|(last_log_id, last_membership, snapshot_id)| SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        })
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<[u8; 16]>().prop_map(Uuid::from_bytes)
}

fn activation() -> impl Strategy<Value = Activation> {
    (
        (
            uuid(),
            any::<u64>(),
            proptest::option::of(".{0,10}"),
            proptest::option::of(".{0,10}"),
        ),
        (uuid(), uuid(), uuid(), uuid()),
        (
            ".{0,30}",
            any::<bool>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u16>(),
        ),
        proptest::option::of(any::<u32>()),
    )
        .prop_map(
            |(
                (request_id, time_ms, count_group, product_group),
                (kms_counted_id, application_id, sku_id, cmid),
                (machine_name, client_vm, license, grace_minutes, required_count, protocol_major),
                refused,
            )| Activation {
                request_id,
                time_ms,
                count_group,
                product_group,
                kms_counted_id,
                application_id,
                sku_id,
                cmid,
                machine_name,
                client_vm,
                // Canonical values only: `Other(n)` for a known n is not what the KMS parser
                // produces, and travels as the known state.
                license_state: LicenseState::from_wire(license),
                grace_minutes,
                required_count,
                protocol_major,
                answered_by: 1,
                outcome: match refused {
                    None => Outcome::Answered,
                    Some(hresult) => Outcome::Refused { hresult },
                },
            },
        )
}

fn host_identity() -> impl Strategy<Value = HostIdentity> {
    (any::<[u8; 8]>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
        |(hwid, build, platform, set_ms)| HostIdentity {
            hwid,
            build,
            platform,
            set_ms,
        },
    )
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        host_identity().prop_map(Command::SetHostIdentity),
        (host_identity(), btree_map(".{0,10}", ".{0,50}", 0..4))
            .prop_map(|(identity, epids)| Command::ReplaceHostIdentity { identity, epids }),
        activation().prop_map(Command::Activation),
        (".{0,10}", ".{0,50}", any::<u64>()).prop_map(|(count_group, epid, time_ms)| {
            Command::SetEpid {
                count_group,
                epid,
                time_ms,
            }
        }),
    ]
}

fn command_result() -> impl Strategy<Value = CommandResult> {
    prop_oneof![
        (any::<u32>(), any::<bool>()).prop_map(|(active_clients, duplicate)| {
            CommandResult::Activation(ActivationResult {
                active_clients,
                duplicate,
            })
        }),
        ".{0,50}".prop_map(CommandResult::Epid),
        host_identity().prop_map(CommandResult::HostIdentity),
    ]
}

fn entry() -> impl Strategy<Value = Entry> {
    let payload = prop_oneof![
        Just(EntryPayload::Blank),
        vec(command(), 0..4).prop_map(|c| EntryPayload::Normal(ClusterRequest::new(c))),
        membership().prop_map(EntryPayload::Membership),
    ];
    (log_id(), payload).prop_map(|(log_id, payload)| Entry { log_id, payload })
}

fn server_state() -> impl Strategy<Value = ServerState> {
    prop_oneof![
        Just(ServerState::Leader),
        Just(ServerState::Follower),
        Just(ServerState::Candidate),
        Just(ServerState::Learner),
        Just(ServerState::Shutdown),
    ]
}

fn node_status() -> impl Strategy<Value = NodeStatus> {
    (
        (
            any::<u64>(),
            server_state(),
            any::<u64>(),
            proptest::option::of(any::<u64>()),
        ),
        (
            proptest::option::of(any::<u64>()),
            proptest::option::of(log_id()),
            proptest::option::of(log_id()),
        ),
        stored_membership(),
        proptest::option::of(any::<u64>()),
        proptest::option::of(btree_map(0u64..8, proptest::option::of(log_id()), 0..4)),
    )
        .prop_map(
            |(
                (node_id, state, current_term, current_leader),
                (last_log_index, last_applied, snapshot),
                membership,
                millis_since_quorum_ack,
                replication,
            )| NodeStatus {
                node_id,
                state,
                current_term,
                current_leader,
                last_log_index,
                last_applied,
                snapshot,
                membership,
                millis_since_quorum_ack,
                replication,
            },
        )
}

fn segment() -> impl Strategy<Value = SnapshotSegmentId> {
    (".{0,10}", any::<u64>()).prop_map(|(id, offset)| SnapshotSegmentId { id, offset })
}

fn non_empty_addr() -> impl Strategy<Value = Option<String>> {
    proptest::option::of("[a-z0-9.-]{1,12}:[0-9]{1,5}")
}

fn wire_error() -> impl Strategy<Value = WireError> {
    prop_oneof![
        (proptest::option::of(any::<u64>()), non_empty_addr()).prop_map(
            |(leader_id, leader_addr)| WireError::NotLeader {
                leader_id,
                leader_addr
            }
        ),
        ".{0,20}".prop_map(|reason| WireError::Unavailable { reason }),
        (
            prop_oneof![
                Just(FatalCause::Storage),
                Just(FatalCause::Panicked),
                Just(FatalCause::Stopped)
            ],
            ".{0,20}"
        )
            .prop_map(|(kind, message)| WireError::Fatal { kind, message }),
        (segment(), segment()).prop_map(|(expect, got)| WireError::SnapshotMismatch(
            SnapshotMismatch { expect, got }
        )),
        (any::<u32>(), any::<u32>(), any::<u32>())
            .prop_map(|(got, min, max)| WireError::SchemaMismatch { got, min, max }),
        ".{0,20}".prop_map(|reason| WireError::InvalidRequest { reason }),
        ".{0,20}".prop_map(|reason| WireError::Refused { reason }),
    ]
}

fn forward_outcome() -> impl Strategy<Value = ForwardOutcome> {
    prop_oneof![
        vec(command_result(), 0..4).prop_map(ForwardOutcome::Applied),
        (proptest::option::of(any::<u64>()), non_empty_addr()).prop_map(
            |(leader_id, leader_addr)| ForwardOutcome::NotLeader {
                leader_id,
                leader_addr
            }
        ),
    ]
}

// --- round trips ----------------------------------------------------------------------------

proptest! {
    #[test]
    fn log_id_round_trips(id in log_id()) {
        let bytes = pb::LogId::from(&id).encode_to_vec();
        prop_assert_eq!(LogId::from(pb::LogId::decode(bytes.as_slice()).unwrap()), id);
    }

    #[test]
    fn vote_round_trips(v in vote()) {
        let bytes = pb::Vote::from(&v).encode_to_vec();
        prop_assert_eq!(Vote::from(pb::Vote::decode(bytes.as_slice()).unwrap()), v);
    }

    #[test]
    fn membership_round_trips(m in membership()) {
        prop_assert_eq!(round_trip::<Membership, pb::Membership>(&m), m);
    }

    #[test]
    fn stored_membership_round_trips(m in stored_membership()) {
        prop_assert_eq!(round_trip::<StoredMembership, pb::StoredMembership>(&m), m);
    }

    #[test]
    fn snapshot_meta_round_trips(meta in snapshot_meta()) {
        prop_assert_eq!(round_trip::<SnapshotMeta, pb::SnapshotMeta>(&meta), meta);
    }

    #[test]
    fn command_round_trips(c in command()) {
        prop_assert_eq!(round_trip::<Command, pb::Command>(&c), c);
    }

    #[test]
    fn command_result_round_trips(r in command_result()) {
        prop_assert_eq!(round_trip::<CommandResult, pb::CommandResult>(&r), r);
    }

    #[test]
    fn commands_round_trip_through_storage_bytes(cmds in vec(command(), 0..5)) {
        prop_assert_eq!(pb::decode_commands(&pb::encode_commands(&cmds)).unwrap(), cmds);
    }

    #[test]
    fn entry_round_trips(e in entry()) {
        prop_assert_eq!(round_trip::<Entry, pb::LogEntry>(&e), e.clone());
        prop_assert_eq!(pb::decode_entry(&pb::encode_entry(&e)).unwrap(), e);
    }

    #[test]
    fn vote_rpc_round_trips(
        v in vote(), last in proptest::option::of(log_id()), granted in any::<bool>(),
    ) {
        let req = VoteRequest { vote: v, last_log_id: last };
        prop_assert_eq!(round_trip::<_, pb::VoteRequest>(&req), req);
        let resp = VoteResponse { vote: v, vote_granted: granted, last_log_id: last };
        prop_assert_eq!(round_trip::<_, pb::VoteResponse>(&resp), resp);
    }

    #[test]
    fn append_entries_rpc_round_trips(
        v in vote(),
        prev_log_id in proptest::option::of(log_id()),
        entries in vec(entry(), 0..4),
        leader_commit in proptest::option::of(log_id()),
        // `AppendEntriesResponse` is not `Clone`, which a strategy needs: pick its kind.
        response_kind in 0u8..4,
        matching in proptest::option::of(log_id()),
    ) {
        let response = match response_kind {
            0 => AppendEntriesResponse::Success,
            1 => AppendEntriesResponse::PartialSuccess(matching),
            2 => AppendEntriesResponse::Conflict,
            _ => AppendEntriesResponse::HigherVote(v),
        };
        let req = AppendEntriesRequest { vote: v, prev_log_id, entries, leader_commit };
        let back = round_trip::<AppendEntriesRequest<kms_cluster::TypeConfig>, pb::AppendEntriesRequest>(&req);
        prop_assert_eq!(back.vote, req.vote);
        prop_assert_eq!(back.prev_log_id, req.prev_log_id);
        prop_assert_eq!(back.entries, req.entries);
        prop_assert_eq!(back.leader_commit, req.leader_commit);
        prop_assert_eq!(round_trip::<_, pb::AppendEntriesResponse>(&response), response);
    }

    #[test]
    fn install_snapshot_rpc_round_trips(
        v in vote(),
        meta in snapshot_meta(),
        offset in any::<u64>(),
        data in vec(any::<u8>(), 0..64),
        done in any::<bool>(),
    ) {
        let req = InstallSnapshotRequest { vote: v, meta, offset, data, done };
        prop_assert_eq!(round_trip::<_, pb::InstallSnapshotRequest>(&req), req);
        let resp = InstallSnapshotResponse { vote: v };
        prop_assert_eq!(round_trip::<_, pb::InstallSnapshotResponse>(&resp), resp);
    }

    #[test]
    fn node_status_round_trips(s in node_status()) {
        prop_assert_eq!(round_trip::<NodeStatus, pb::StatusResponse>(&s), s);
    }

    #[test]
    fn forward_round_trips(cmds in vec(command(), 0..4), outcome in forward_outcome()) {
        let bytes = pb::forward_request(&cmds).encode_to_vec();
        let back = pb::forward_commands(pb::ForwardRequest::decode(bytes.as_slice()).unwrap());
        prop_assert_eq!(back.unwrap(), cmds);
        prop_assert_eq!(round_trip::<ForwardOutcome, pb::ForwardResponse>(&outcome), outcome);
    }

    #[test]
    fn cluster_requests_round_trip(
        members in btree_map(any::<u64>(), addr(), 0..4),
        id in any::<u64>(),
        a in addr(),
        ask in (any::<u64>(), any::<u64>(), proptest::option::of(any::<u64>())),
    ) {
        let bytes = pb::members_request(&members).encode_to_vec();
        let back = pb::members_from_pb(pb::MembersRequest::decode(bytes.as_slice()).unwrap());
        prop_assert_eq!(back.unwrap(), members);

        let bytes = pb::add_learner_request(id, &a).encode_to_vec();
        let back = pb::add_learner_from_pb(pb::AddLearnerRequest::decode(bytes.as_slice()).unwrap());
        prop_assert_eq!(back.unwrap(), (id, a));

        let ask = pb::TakeLeadership { leader_id: ask.0, term: ask.1, last_log_index: ask.2 };
        prop_assert_eq!(round_trip::<pb::TakeLeadership, pb::TakeLeadershipRequest>(&ask), ask);
    }

    #[test]
    fn wire_error_round_trips_through_a_status(e in wire_error()) {
        prop_assert_eq!(round_trip::<WireError, pb::ErrorDetail>(&e), e.clone());
        let status = e.to_status();
        prop_assert_eq!(status.code(), e.code());
        prop_assert_eq!(WireError::from_status(&status), Some(Ok(e)));
    }

    /// Arbitrary bytes never panic a decoder; they decode or fail with an error.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..256)) {
        let _ = pb::decode_entry(&bytes);
        let _ = pb::decode_commands(&bytes);
        if let Ok(m) = pb::AppendEntriesRequest::decode(bytes.as_slice()) {
            let _ = AppendEntriesRequest::<kms_cluster::TypeConfig>::try_from(m);
        }
        if let Ok(m) = pb::StatusResponse::decode(bytes.as_slice()) {
            let _ = NodeStatus::try_from(m);
        }
        if let Ok(m) = pb::ErrorDetail::decode(bytes.as_slice()) {
            let _ = WireError::try_from(m);
        }
    }

    /// Every strict prefix of an encoded entry fails to decode (the payload or a length
    /// prefix is cut), or decodes to something else than the entry: never a panic.
    #[test]
    fn truncated_entry_is_an_error(e in entry()) {
        let bytes = pb::encode_entry(&e);
        for len in 0..bytes.len() {
            if let Ok(decoded) = pb::decode_entry(&bytes[..len]) {
                prop_assert_ne!(decoded, e.clone());
            }
        }
    }
}

// --- rejections -----------------------------------------------------------------------------

fn sample_entry() -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(3, 1), 42),
        payload: EntryPayload::Normal(ClusterRequest::new(vec![Command::SetEpid {
            count_group: "windows".into(),
            epid: "06401-00206-491-123456-03-1033-17763.0000-0012025".into(),
            time_ms: 1_700_000_000_000,
        }])),
    }
}

#[test]
fn garbage_and_truncated_bytes_are_errors() {
    assert!(matches!(
        pb::decode_entry(&[0xff, 0xff, 0xff]),
        Err(PbError::Decode {
            what: "LogEntry",
            ..
        })
    ));
    // Empty bytes are a message with every field absent: schema version 0.
    assert!(matches!(
        pb::decode_entry(&[]),
        Err(PbError::SchemaVersion { got: 0, .. })
    ));
    let bytes = pb::encode_entry(&sample_entry());
    let cut = &bytes[..bytes.len() - 3];
    assert!(
        matches!(pb::decode_entry(cut), Err(PbError::Decode { .. })),
        "{:?}",
        pb::decode_entry(cut)
    );
    assert!(pb::decode_commands(b"not protobuf at all").is_err());
}

#[test]
fn missing_and_invalid_fields_are_named() {
    let mut entry = pb::LogEntry::from(&sample_entry());
    entry.log_id = None;
    assert_eq!(
        Entry::try_from(entry),
        Err(PbError::Missing {
            field: "LogEntry.log_id"
        })
    );

    let mut entry = pb::LogEntry::from(&sample_entry());
    entry.payload = None;
    assert_eq!(
        Entry::try_from(entry),
        Err(PbError::Missing {
            field: "LogEntry.payload"
        })
    );

    let mut a = pb::Activation::from(&Activation {
        request_id: Uuid::from_u128(1),
        time_ms: 1,
        count_group: None,
        product_group: None,
        kms_counted_id: Uuid::from_u128(2),
        application_id: Uuid::from_u128(3),
        sku_id: Uuid::from_u128(4),
        cmid: Uuid::from_u128(5),
        machine_name: "pc".into(),
        client_vm: false,
        license_state: LicenseState::Licensed,
        grace_minutes: 0,
        required_count: 25,
        protocol_major: 6,
        answered_by: 1,
        outcome: Outcome::Answered,
    });
    a.cmid.truncate(15);
    assert_eq!(
        Activation::try_from(a.clone()),
        Err(PbError::Length {
            field: "Activation.cmid",
            expected: 16,
            len: 15
        })
    );
    a.cmid.push(0);
    a.protocol_major = 70_000;
    assert!(matches!(
        Activation::try_from(a.clone()),
        Err(PbError::OutOfRange {
            field: "Activation.protocol_major",
            ..
        })
    ));
    a.protocol_major = 6;
    a.outcome = None;
    assert_eq!(
        Activation::try_from(a),
        Err(PbError::Missing {
            field: "Activation.outcome"
        })
    );

    let identity = HostIdentity {
        hwid: [1; 8],
        build: 20348,
        platform: 3612,
        set_ms: 1,
    };
    let mut h = pb::HostIdentity::from(&identity);
    h.hwid.push(0);
    assert_eq!(
        HostIdentity::try_from(h),
        Err(PbError::Length {
            field: "HostIdentity.hwid",
            expected: 8,
            len: 9
        })
    );
    let replace = pb::Command {
        kind: Some(pb::command::Kind::ReplaceHostIdentity(
            pb::ReplaceHostIdentity {
                identity: None,
                epids: vec![],
            },
        )),
    };
    assert_eq!(
        Command::try_from(replace),
        Err(PbError::Missing {
            field: "ReplaceHostIdentity.identity"
        })
    );

    let membership = pb::Membership {
        configs: vec![pb::NodeIdSet { ids: vec![1, 2] }],
        nodes: BTreeMap::from([(1, "a:1".to_string())]),
    };
    assert_eq!(
        Membership::try_from(membership),
        Err(PbError::VoterWithoutNode { voter: 2 })
    );

    let status = pb::StatusResponse {
        role: pb::Role::Unspecified.into(),
        membership: Some(pb::StoredMembership::default()),
        ..Default::default()
    };
    assert!(matches!(
        NodeStatus::try_from(status),
        Err(PbError::UnknownEnum {
            field: "StatusResponse.role",
            value: 0
        })
    ));
    assert!(matches!(
        WireError::try_from(pb::ErrorDetail { kind: None }),
        Err(PbError::Missing {
            field: "ErrorDetail.kind"
        })
    ));
}

#[test]
fn unknown_schema_version_is_rejected() {
    let unknown = pb::SCHEMA_VERSION + 1;
    let mut entry = pb::LogEntry::from(&sample_entry());
    entry.schema_version = unknown;
    let expected = PbError::SchemaVersion {
        got: unknown,
        min: pb::MIN_SCHEMA_VERSION,
        max: pb::SCHEMA_VERSION,
    };
    assert_eq!(
        pb::decode_entry(&entry.encode_to_vec()),
        Err(expected.clone())
    );

    let mut stored = pb::StoredCommands::decode(pb::encode_commands(&[]).as_slice()).unwrap();
    stored.schema_version = unknown;
    assert_eq!(
        pb::decode_commands(&stored.encode_to_vec()),
        Err(expected.clone())
    );

    let mut request = pb::VoteRequest::from(&VoteRequest {
        vote: Vote::new(1, 1),
        last_log_id: None,
    });
    request.schema_version = unknown;
    assert_eq!(VoteRequest::try_from(request), Err(expected.clone()));

    let mut request = pb::forward_request(&[]);
    request.schema_version = 0;
    assert!(matches!(
        pb::forward_commands(request),
        Err(PbError::SchemaVersion { got: 0, .. })
    ));

    // At the service edge it is FAILED_PRECONDITION with a typed detail.
    let status = tonic::Status::from(expected);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition);
    assert_eq!(
        WireError::from_status(&status),
        Some(Ok(WireError::SchemaMismatch {
            got: unknown,
            min: pb::MIN_SCHEMA_VERSION,
            max: pb::SCHEMA_VERSION,
        }))
    );
}

#[test]
fn joint_membership_keeps_both_configs() {
    let m = Membership::new(
        vec![BTreeSet::from([1, 2, 3]), BTreeSet::from([3, 4, 5])],
        BTreeMap::from_iter((1..=6).map(|id| (id, Node::new(format!("10.0.0.{id}:9689"))))),
    );
    let back = round_trip::<Membership, pb::Membership>(&m);
    assert_eq!(back.get_joint_config().len(), 2);
    assert_eq!(back.learner_ids().collect::<Vec<_>>(), vec![6]);
    assert_eq!(back, m);
}
