//! What travels in the Raft log and snapshots round-trips through MsgPack, and bytes that
//! would break an invariant are refused while decoding rather than trusted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use topgun_cluster::{
    CatalogPut, Command, CommandResult, ControlState, Expect, PartitionTable, Refusal,
};

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

#[test]
fn catalogs_round_trip_and_a_state_written_before_them_still_decodes() {
    let mut state = formed(&["a", "b"], 1);
    let before_catalogs = rmp_serde::to_vec(&state).unwrap();
    let put = CatalogPut {
        catalog: "__topgun_policies".into(),
        key: "p1".into(),
        value: Some(vec![1, 2, 3]),
        expect: Expect::Absent,
        max_entries: 10,
    };
    assert_eq!(
        state.apply(Command::CatalogPut(put), 2_000).result,
        CommandResult::Done
    );
    assert_eq!(round_trip(&state), state);

    // The same state as a member written before catalogs and the applied time existed kept
    // it: a one-field state, its cluster's array one field shorter, without the (empty)
    // catalogs at its end.
    let time = rmp_serde::to_vec(&formed(&["a", "b"], 1).time_ms()).unwrap();
    let empty_catalogs = [0x92, 0x80, 0x00];
    let cluster = &before_catalogs[1..before_catalogs.len() - time.len()];
    assert_eq!(before_catalogs[0], 0x92, "a two-field state");
    assert!(cluster.ends_with(&empty_catalogs));
    assert_eq!(cluster[0], 0x98, "an 8-field cluster");
    let mut old = vec![0x91, 0x97];
    old.extend_from_slice(&cluster[1..cluster.len() - empty_catalogs.len()]);
    let decoded: ControlState = rmp_serde::from_slice(&old).unwrap();
    assert_eq!(decoded.cluster(), formed(&["a", "b"], 1).cluster());
    assert_eq!(decoded.time_ms(), 0);
}
