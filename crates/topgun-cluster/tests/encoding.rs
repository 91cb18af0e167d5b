//! What travels in the Raft log and snapshots round-trips through MsgPack, and bytes that
//! would break an invariant are refused while decoding rather than trusted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use topgun_cluster::{Command, CommandResult, ControlState, PartitionTable, Refusal};

fn round_trip<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
    rmp_serde::from_slice(&rmp_serde::to_vec(value).unwrap()).unwrap()
}

#[test]
fn a_formed_control_state_round_trips_unchanged() {
    let mut state = formed(&["a", "b", "c"], 1);
    state.apply(join_cmd("d", 9, 7004), 2_000);
    converge(&mut state, 3_000);
    assert_eq!(round_trip(&state), state);
    assert_eq!(round_trip(&ControlState::new()), ControlState::new());
}

#[test]
fn commands_and_results_round_trip_unchanged() {
    let cmd = bootstrap_cmd(&["a", "b"], 1);
    assert_eq!(round_trip(&cmd), cmd);
    let refused = CommandResult::Refused(Refusal::BadBootstrap {
        reason: "no members".into(),
    });
    assert_eq!(round_trip(&refused), refused);
}

#[test]
fn a_table_of_the_wrong_length_is_refused_while_decoding() {
    let state = formed(&["a", "b"], 1);
    let table = cluster(&state).table();
    let mut entries: Vec<_> = table.iter().map(|(_, e)| e.clone()).collect();
    entries.pop();
    let bytes = rmp_serde::to_vec(&entries).unwrap();
    assert!(rmp_serde::from_slice::<PartitionTable>(&bytes).is_err());
}

#[test]
fn a_table_naming_its_owner_as_backup_is_refused_while_decoding() {
    let state = formed(&["a", "b"], 1);
    let mut entries: Vec<_> = cluster(&state)
        .table()
        .iter()
        .map(|(_, e)| e.clone())
        .collect();
    entries[0].isr = vec![entries[0].owner];
    let bytes = rmp_serde::to_vec(&entries).unwrap();
    assert!(rmp_serde::from_slice::<PartitionTable>(&bytes).is_err());
}

#[test]
fn names_and_partition_numbers_are_validated_while_decoding() {
    let bad_name = rmp_serde::to_vec(&Command::Join {
        name: name("x"),
        incarnation: topgun_cluster::Incarnation(1),
        addrs: addrs("x", 1),
    })
    .unwrap();
    // Swap the one-byte name "x" for ":" in place: same length, now forbidden.
    let at = bad_name.iter().position(|&b| b == b'x').unwrap();
    let mut bytes = bad_name.clone();
    bytes[at] = b':';
    assert!(rmp_serde::from_slice::<Command>(&bytes).is_err());
    assert!(
        rmp_serde::from_slice::<topgun_cluster::PartitionId>(&rmp_serde::to_vec(&271u16).unwrap())
            .is_err()
    );
    assert!(
        rmp_serde::from_slice::<topgun_cluster::PartitionId>(&rmp_serde::to_vec(&270u16).unwrap())
            .is_ok()
    );
}
