use std::collections::BTreeMap;

use super::*;

#[test]
fn partitions_are_spread_evenly_and_deterministically() {
    let a = assign(5, &[7, 3]);
    assert_eq!(a[&3], vec![0, 2, 4]);
    assert_eq!(a[&7], vec![1, 3]);
    assert_eq!(assign(5, &[3, 7]), a);
    assert_eq!(assign(2, &[1, 2, 3])[&3], Vec::<u32>::new());
    assert!(assign(4, &[]).is_empty());
}

#[test]
fn members_share_and_rebalance_on_leave() {
    let reg = GroupRegistry::default();
    let (a, state, rx_a) = reg.join("g", "t", 4, BTreeMap::new).unwrap();
    assert_eq!(*rx_a.borrow(), vec![0, 1, 2, 3]);
    let (b, _, rx_b) = reg
        .join("g", "t", 4, || unreachable!("the group exists"))
        .unwrap();
    assert_eq!(*rx_a.borrow(), vec![0, 2]);
    assert_eq!(*rx_b.borrow(), vec![1, 3]);
    assert!(state.lock().unwrap().owns(b, 3));
    assert!(!state.lock().unwrap().owns(a, 3));
    assert_eq!(reg.check_idle("g"), Err(Busy::Members(2)));
    reg.leave("g", b);
    assert_eq!(*rx_a.borrow(), vec![0, 1, 2, 3]);
    reg.leave("g", a);
    assert_eq!(reg.check_idle("g"), Ok(()));
    assert_eq!(reg.members("g"), 0);
}

#[test]
fn pipeline_groups_and_other_topics_are_refused() {
    let reg = GroupRegistry::default();
    reg.claim_for_pipeline("p", "erp-to-crm");
    assert_eq!(
        reg.join("p", "t", 1, BTreeMap::new).err(),
        Some(Busy::Pipeline("erp-to-crm".into()))
    );
    assert_eq!(
        reg.check_idle("p"),
        Err(Busy::Pipeline("erp-to-crm".into()))
    );
    reg.join("g", "t", 1, BTreeMap::new).unwrap();
    assert_eq!(
        reg.join("g", "u", 1, BTreeMap::new).err(),
        Some(Busy::OtherTopic("t".into()))
    );
}
