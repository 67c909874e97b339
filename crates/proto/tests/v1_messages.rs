//! The generated `flotilla.v1` messages on the wire: round trips, and how a message from a
//! newer peer (unknown fields, enum values and commands) is read.

use flotilla_proto::v1::{
    self, AgentReport, ClusterSnapshot, ClusterTotals, ContributionRecord, FinishJoinRequest,
    HeadCommand, InviteRecord, InviteReply, InviteRequest, JobStatus, JobSummary, JoinReply,
    JoinRequest, ListInvitesReply, ListNodesReply, NodeRecord, NodeState, NodeSummary, PauseMode,
    PolicyDefaults, PowerSource, PreviousNode, RaySpec, Reason, RevokeInviteRequest, RevokeReply,
    RevokeRequest, head_command::Command,
};
use prost::Message;

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(m: &M) {
    let bytes = m.encode_to_vec();
    assert_eq!(&M::decode(bytes.as_slice()).unwrap(), m);
}

fn reason() -> Reason {
    Reason {
        code: "owner_active".into(),
        text_en: "The owner is using the machine".into(),
        text_es: "El dueño está usando la máquina".into(),
    }
}

fn report() -> AgentReport {
    AgentReport {
        node_id: "n-7f3a".into(),
        seq: 12_345_678_901,
        time_unix_ms: 1_760_000_000_123,
        state: NodeState::Throttled as i32,
        reason: Some(reason()),
        advertised_cpus: 3.0,
        capped_cpus: 2.5,
        owner_active: Some(true),
        power_source: PowerSource::Battery as i32,
        battery_percent: Some(81.5),
        owner_load: 1.25,
        memory_total_bytes: 16 << 30,
        memory_available_bytes: 9 << 30,
        ray_node_id: "a1b2c3".into(),
        running_tasks: 4,
        python_version: "3.11.2".into(),
        contributed_cpu_seconds: 29.75,
        contributions: vec![
            ContributionRecord {
                hour_start_unix: 1_759_996_800,
                cpu_seconds: 7200.0,
                seq: 12_345_678_899,
            },
            ContributionRecord {
                hour_start_unix: 1_760_000_400,
                cpu_seconds: 3.5,
                seq: 12_345_678_900,
            },
        ],
    }
}

#[test]
fn join_messages_round_trip() {
    round_trip(&JoinRequest {
        join_secret: vec![7; 32],
        node_name: "studio".into(),
        hostname: "studio.local".into(),
        previous: Some(PreviousNode {
            node_id: "12".into(),
            credential: vec![5; 32],
        }),
        confirms: true,
        os: "linux".into(),
        arch: "x86_64".into(),
        cpus: 16,
        memory_bytes: 32 << 30,
        python_versions: vec!["3.12.1".into(), "3.11.2".into()],
        python_downloads: false,
        agent_version: "0.1.0".into(),
    });
    round_trip(&JoinReply {
        node_id: "n-7f3a".into(),
        node_credential: vec![9; 32],
        node_name: "studio-2".into(),
        notice: Some(Reason {
            code: "name_taken".into(),
            text_en: "taken".into(),
            text_es: "ocupado".into(),
        }),
        confirm_within_secs: 120,
        ray: Some(RaySpec {
            gcs_addresses: vec!["10.0.0.2:6379".into(), "head.ts.net:6379".into()],
            ray_version: "2.60.0".into(),
            python_version: "3.12".into(),
            ray_token: "tok".into(),
        }),
        policy: Some(PolicyDefaults {
            toml: "[policy]\nmax_cpus = 4\n".into(),
        }),
    });
    round_trip(&FinishJoinRequest {
        node_id: "n-7f3a".into(),
        node_credential: vec![9; 32],
        kept: true,
    });
}

#[test]
fn session_messages_round_trip() {
    round_trip(&report());
    let commands = [
        Command::Pause(v1::Pause {
            until_unix_ms: 1_760_003_600_000,
            mode: PauseMode::Now as i32,
            reason: Some(reason()),
        }),
        Command::Resume(v1::Resume {}),
        Command::SetPolicy(v1::SetPolicy {
            toml: "[policy]\n".into(),
        }),
        Command::Leave(v1::Leave {
            reason: Some(reason()),
        }),
        Command::Ack(v1::Ack {
            up_to_seq: u64::MAX,
        }),
    ];
    for command in commands {
        round_trip(&HeadCommand {
            command: Some(command),
        });
    }
}

#[test]
fn cluster_and_admin_messages_round_trip() {
    round_trip(&ClusterSnapshot {
        time_unix_ms: 1_760_000_000_000,
        nodes: vec![NodeSummary {
            node_id: "n-1".into(),
            name: "laptop".into(),
            state: NodeState::Paused as i32,
            reason: Some(reason()),
            python_version: "3.11.2".into(),
            cpus_advertised: 0.0,
            cpus_total: 8.0,
            cpus_used: 0.0,
            owner_active: None,
            battery_percent: Some(12.0),
            last_seen_unix_ms: 1_759_999_999_000,
        }],
        totals: Some(ClusterTotals {
            nodes: 1,
            nodes_contributing: 0,
            cpus_advertised: 0.0,
            cpus_total: 8.0,
            cpus_used: 0.0,
            running_tasks: 0,
        }),
        jobs: vec![JobSummary {
            id: "raysubmit_1".into(),
            status: JobStatus::Running as i32,
            entrypoint: "python sweep.py".into(),
            reason: "installing the job's dependencies failed: No matching distribution".into(),
        }],
    });
    round_trip(&InviteRequest {
        uses: 3,
        expires_secs: 86_400,
    });
    round_trip(&InviteReply {
        code: "flot1-abcde".into(),
        expires_unix: 1_760_086_400,
        invite_id: "4".into(),
        uses: 3,
    });
    round_trip(&ListInvitesReply {
        invites: vec![InviteRecord {
            invite_id: "4".into(),
            created_unix: 1_760_000_000,
            expires_unix: 1_760_086_400,
            uses: 3,
            uses_left: 1,
            revoked_unix: 0,
            joined: vec!["mbp".into(), "mbp-2".into()],
            state: "usable".into(),
        }],
    });
    round_trip(&RevokeInviteRequest {
        invite_id: "4".into(),
    });
    round_trip(&RevokeRequest {
        node: "laptop".into(),
    });
    round_trip(&RevokeReply {
        node_id: "n-1".into(),
        name: "laptop".into(),
    });
    round_trip(&ListNodesReply {
        nodes: vec![NodeRecord {
            node_id: "n-1".into(),
            name: "laptop".into(),
            hostname: "laptop.local".into(),
            state: NodeState::Offline as i32,
            os: "macos".into(),
            arch: "aarch64".into(),
            cpus: 10,
            memory_bytes: 16 << 30,
            agent_version: "0.1.0".into(),
            joined_unix: 1_750_000_000,
            last_seen_unix_ms: 0,
        }],
    });
}

#[test]
fn unset_optional_readings_stay_unset() {
    let r = AgentReport {
        owner_active: None,
        battery_percent: None,
        ..report()
    };
    let back = AgentReport::decode(r.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back.owner_active, None);
    assert_eq!(back.battery_percent, None);
    let zero = AgentReport {
        owner_active: Some(false),
        battery_percent: Some(0.0),
        ..report()
    };
    let back = AgentReport::decode(zero.encode_to_vec().as_slice()).unwrap();
    assert_eq!(back.owner_active, Some(false));
    assert_eq!(back.battery_percent, Some(0.0));
}

/// `AgentReport` as a newer agent might send it: the same fields plus ones this version does
/// not have.
#[derive(Clone, PartialEq, prost::Message)]
struct NewerAgentReport {
    #[prost(string, tag = "1")]
    node_id: String,
    #[prost(uint64, tag = "2")]
    seq: u64,
    #[prost(enumeration = "NodeState", tag = "10")]
    state: i32,
    #[prost(string, tag = "4")]
    new_text: String,
    #[prost(double, tag = "26")]
    new_reading: f64,
    #[prost(message, repeated, tag = "99")]
    new_records: Vec<Reason>,
    #[prost(fixed64, tag = "1000")]
    new_far_field: u64,
}

#[test]
fn unknown_fields_are_skipped() {
    let newer = NewerAgentReport {
        node_id: "n-1".into(),
        seq: 42,
        state: NodeState::Contributing as i32,
        new_text: "something new".into(),
        new_reading: 1.5,
        new_records: vec![reason(), reason()],
        new_far_field: 0xdead_beef,
    };
    let read = AgentReport::decode(newer.encode_to_vec().as_slice()).unwrap();
    assert_eq!(
        read,
        AgentReport {
            node_id: "n-1".into(),
            seq: 42,
            state: NodeState::Contributing as i32,
            ..Default::default()
        }
    );
}

#[test]
fn an_unknown_enum_value_decodes_as_its_number() {
    let r = AgentReport {
        state: 42,
        power_source: 7,
        ..report()
    };
    let read = AgentReport::decode(r.encode_to_vec().as_slice()).unwrap();
    assert_eq!(read.state, 42);
    assert!(NodeState::try_from(read.state).is_err());
    // The generated accessor falls back to the default (UNSPECIFIED) for a value it does not know.
    assert_eq!(read.state(), NodeState::Unspecified);
    assert_eq!(read.power_source, 7);
    assert_eq!(read.power_source(), PowerSource::Unspecified);

    let pause = v1::Pause {
        mode: 9,
        ..Default::default()
    };
    let read = v1::Pause::decode(pause.encode_to_vec().as_slice()).unwrap();
    assert_eq!(read.mode, 9);
    assert!(PauseMode::try_from(read.mode).is_err());
}

#[test]
fn every_enum_reads_unspecified_when_unset() {
    let r = AgentReport::decode(&[][..]).unwrap();
    assert_eq!(r.state(), NodeState::Unspecified);
    assert_eq!(r.power_source(), PowerSource::Unspecified);
    assert_eq!(v1::Pause::default().mode(), PauseMode::Unspecified);
    assert_eq!(JobSummary::default().status(), JobStatus::Unspecified);
    assert_eq!(NodeState::Unspecified as i32, 0);
    assert_eq!(PowerSource::Unspecified as i32, 0);
    assert_eq!(PauseMode::Unspecified as i32, 0);
    assert_eq!(JobStatus::Unspecified as i32, 0);
}

#[test]
fn an_unknown_command_reads_as_no_command() {
    // Field 7 of HeadCommand, a command this version does not know, holding an empty message.
    let mut bytes = vec![(7 << 3) | 2, 0];
    let read = HeadCommand::decode(bytes.as_slice()).unwrap();
    assert_eq!(read.command, None);
    // After a known one, the known one stays.
    bytes.extend(
        HeadCommand {
            command: Some(Command::Ack(v1::Ack { up_to_seq: 5 })),
        }
        .encode_to_vec(),
    );
    let read = HeadCommand::decode(bytes.as_slice()).unwrap();
    assert_eq!(read.command, Some(Command::Ack(v1::Ack { up_to_seq: 5 })));
}

#[test]
fn debug_redacts_secrets() {
    let join = JoinRequest {
        join_secret: b"SECRET-JOIN".to_vec(),
        node_name: "studio".into(),
        previous: Some(PreviousNode {
            node_id: "3".into(),
            credential: b"SECRET-OLD".to_vec(),
        }),
        ..Default::default()
    };
    let finish = FinishJoinRequest {
        node_id: "3".into(),
        node_credential: b"SECRET-CRED".to_vec(),
        kept: true,
    };
    let reply = JoinReply {
        node_id: "n-1".into(),
        node_credential: b"SECRET-CRED".to_vec(),
        ray: Some(RaySpec {
            ray_token: "SECRET-TOKEN".into(),
            ray_version: "2.60.0".into(),
            ..Default::default()
        }),
        policy: None,
        ..Default::default()
    };
    let invite = InviteReply {
        code: "flot1-SECRET".into(),
        expires_unix: 5,
        ..Default::default()
    };
    for debug in [
        format!("{join:?}"),
        format!("{finish:?}"),
        format!("{reply:?}"),
        format!("{invite:?}"),
        format!("{join:#?}"),
    ] {
        assert!(!debug.contains("SECRET"), "{debug}");
        assert!(!debug.contains("83, 69, 67"), "{debug}"); // b"SEC" as bytes.
        assert!(debug.contains("<redacted>"), "{debug}");
    }
    assert!(format!("{join:?}").contains("studio"));
    assert!(format!("{reply:?}").contains("2.60.0"));
    assert!(format!("{:?}", JoinRequest::default()).contains("<empty>"));
}
