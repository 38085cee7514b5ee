//! Forming the cluster: after `tandem cluster join`, every node agrees on
//! one leader among three voters; no node serves or holds the VIP before a
//! service config is applied, and then exactly one does, both by its own
//! report and on its interface.

use serde_json::Value;
use tandem_tests::cluster::{
    describe_statuses, three_node_cluster, vip_count, vip_holders, wait_agreed_leader,
    AGREE_TIMEOUT,
};
use tandem_tests::{apply, lab, phase, status, wait_until, SERVICE_TOML};

#[test]
fn cluster_forms_by_join() {
    let lab = three_node_cluster(0);
    let leader = wait_agreed_leader(&lab, &[1, 2, 3], AGREE_TIMEOUT);

    phase("every node lists the same three voters and the same leader");
    let views: Vec<Value> = (1..=3)
        .map(|i| status(&lab, i).unwrap_or_else(|e| panic!("status of node {i}: {e:#}")))
        .collect();
    for (i, v) in (1_u64..=3).zip(&views) {
        assert_eq!(v["node_id"].as_u64(), Some(i), "node {i}'s status: {v}");
        assert_eq!(
            v["leader"].as_u64(),
            Some(leader as u64),
            "node {i}'s status: {v}"
        );
        let members = v["members"]
            .as_array()
            .unwrap_or_else(|| panic!("node {i}: no members array: {v}"));
        let mut ids: Vec<u64> = members.iter().filter_map(|m| m["id"].as_u64()).collect();
        ids.sort_unstable();
        assert_eq!(ids, [1, 2, 3], "node {i}'s members: {v}");
        for m in members {
            assert_ne!(m["role"], "learner", "node {i} still lists a learner: {v}");
            let id = m["id"].as_u64().expect("checked above") as usize;
            assert_eq!(
                m["api"]
                    .as_str()
                    .map(|a| a.contains(&lab.node_ip(id).to_string())),
                Some(true),
                "member api of {id}: {v}"
            );
            assert_eq!(
                m["raft"].as_str(),
                Some(lab.node_raft_addr(id).as_str()),
                "member raft address of {id}: {v}"
            );
        }
    }
    let terms: Vec<Option<u64>> = views.iter().map(|v| v["term"].as_u64()).collect();
    assert!(
        terms.iter().all(|t| t.is_some() && *t == terms[0]),
        "terms differ: {terms:?}"
    );

    phase("no service config yet: no node serves or holds the VIP");
    for i in 1..=3 {
        let v = status(&lab, i).unwrap_or_else(|e| panic!("status of node {i}: {e:#}"));
        assert_eq!(
            v["serving"].as_bool(),
            Some(false),
            "node {i}'s status: {v}"
        );
        assert_eq!(
            vip_count(&lab, i),
            0,
            "node {i} holds the VIP without a config"
        );
    }
    let leader_status = status(&lab, leader).expect("leader status");
    assert!(
        leader_status["warnings"].as_array().is_some_and(|w| w
            .iter()
            .any(|m| m.as_str().is_some_and(|m| m.contains("no service config")))),
        "the leader does not say why it does not serve: {leader_status}"
    );
    apply(&lab, leader, SERVICE_TOML);

    phase("exactly one node serves and holds the VIP: the leader");
    let settled = wait_until(std::time::Duration::from_secs(5), || {
        vip_holders(&lab) == [leader]
    });
    assert!(
        settled,
        "VIP on nodes {:?}, leader is {leader}:\n{}",
        vip_holders(&lab),
        describe_statuses(&lab, &[1, 2, 3])
    );
    for i in 1..=3 {
        let is_leader = i == leader;
        let v = status(&lab, i).unwrap_or_else(|e| panic!("status of node {i}: {e:#}"));
        assert_eq!(
            v["serving"].as_bool(),
            Some(is_leader),
            "node {i}'s status: {v}"
        );
        assert_eq!(
            v["vip_held"].as_bool(),
            Some(is_leader),
            "node {i}'s status: {v}"
        );
        assert_eq!(
            v["vip"]
                .as_str()
                .map(|s| s.starts_with(&lab::VIP.to_string())),
            Some(true),
            "node {i}'s status: {v}"
        );
        assert_eq!(
            vip_count(&lab, i),
            usize::from(is_leader),
            "10.99.0.10 on node {i}'s eth1 (leader {leader})"
        );
    }
}
