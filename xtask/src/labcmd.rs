//! `cargo xtask lab up|down`: a lab that outlives the command, for poking at
//! by hand. It uses the fixed prefix `tl`, so there is one at a time and
//! `lab down` finds it by name.

use anyhow::Result;
use lab::{Lab, BRIDGE, INTERFACE, VIP_CIDR, XTASK_PREFIX};

use crate::util::{require_root, target_dir};

pub fn up(nodes: usize, clients: usize) -> Result<()> {
    require_root("cargo xtask lab up")?;
    let lab = Lab::builder()
        .prefix(XTASK_PREFIX)
        .nodes(nodes)
        .clients(clients)
        .build()?;
    for i in 1..=nodes {
        lab.write_node_config(i, "")?;
    }
    let bin = target_dir().join("release").join("tandem");

    println!(
        "lab {XTASK_PREFIX} is up: {nodes} node(s), {clients} client(s); files under {}",
        lab.root().display()
    );
    println!(
        "  {:<10} switch: bridge {BRIDGE} (STP off)",
        lab.switch_ns()
    );
    for i in 1..=nodes {
        println!(
            "  {:<10} node {i}: {INTERFACE} {}/16 ({}), config {}",
            lab.node_ns(i),
            lab.node_ip(i),
            lab.node_mac(i),
            lab.node_config_path(i).display()
        );
    }
    for j in 1..=clients {
        println!(
            "  {:<10} client {j}: {INTERFACE} {} (no address: a DHCP client)",
            lab.client_ns(j),
            lab.client_mac(j)
        );
    }
    println!("VIP: {VIP_CIDR}");
    println!();
    if nodes > 0 {
        let n1 = lab.node_ns(1);
        println!("enter a namespace:  ip netns exec {n1} bash");
        println!(
            "start node 1:       ip netns exec {n1} {} daemon --config {}",
            bin.display(),
            lab.node_config_path(1).display()
        );
        println!(
            "ask node 1:         ip netns exec {n1} {} --api {} --config {} status",
            bin.display(),
            lab.node_api(1),
            lab.node_config_path(1).display()
        );
    }
    if clients > 0 {
        println!(
            "get a lease:        ip netns exec {} busybox udhcpc -f -q -n -i {INTERFACE}",
            lab.client_ns(1)
        );
    }
    println!("tear it down:       cargo xtask lab down");
    lab.persist();
    Ok(())
}

pub fn down() -> Result<()> {
    require_root("cargo xtask lab down")?;
    let removed = lab::cleanup_stale(&format!("{XTASK_PREFIX}-"))?;
    let orphans = lab::cleanup_orphans()?;
    if removed.is_empty() && orphans.is_empty() {
        println!("no lab to remove");
    }
    if !removed.is_empty() {
        println!("removed lab {XTASK_PREFIX}: {}", removed.join(" "));
    }
    if !orphans.is_empty() {
        println!(
            "removed namespaces of dead test runs: {}",
            orphans.join(" ")
        );
    }
    Ok(())
}
