//! perfdhcp (Kea's load generator) as a relay in the client namespace, and
//! a parser for the report it prints at exit.
//!
//! perfdhcp always speaks as a relay: it sends from port 67 of its local
//! address with giaddr set to that address, so the server answers to
//! giaddr:67. One "exchange" is a full DORA: DISCOVER → OFFER, then
//! REQUEST → ACK. Its report has one block per half:
//!
//! ```text
//! Rate: 1995.02 4-way exchanges/second, expected rate: 2000
//! ***Statistics for: DISCOVER-OFFER***
//! sent packets: 9999
//! received packets: 9988
//! drops: 11
//! ...
//! rejected leases: 0
//! ***Statistics for: REQUEST-ACK***
//! ...
//! ```
//!
//! "Rate" is completed exchanges (ACKs received) per second of the test period.
//!
//! `-R N` plays N clients, and perfdhcp draws their MACs in sequence, not at
//! random: the first N exchanges come from N different clients, and only
//! then does the first MAC come back. (Measured here with kea-dhcp4 2.2:
//! `-R 800` over 2,000 exchanges left exactly 800 leases; random picks would
//! have left about 734.) So a trial of `rate × period` exchanges needs that
//! many free addresses while it stays below N, and N once it wraps: with the
//! old `-R 100000` and a 61,440-address pool every server hit the pool at
//! 6,144 exchanges/s in a 10-s trial.
//!
//! perfdhcp reports neither NAKs nor unanswered DISCOVERs as such: both are
//! plain drops, so an exhausted pool looks like a slow server here (the
//! servers' own logs tell them apart, see `servers::exhaustion_line`).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{tail, wait_exit, Bench, CLIENT_ADDR};

/// One half of the four-way exchange, as perfdhcp counted it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Half {
    pub sent: u64,
    pub received: u64,
    pub drops: u64,
    /// perfdhcp's "rejected leases". A NAK is not one (measured with
    /// dnsmasq refusing at its lease cap: 499 NAKs, 0 rejected, 499 drops).
    pub rejected: u64,
}

/// perfdhcp's report of one run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Report {
    /// Completed four-way exchanges per second.
    pub rate: f64,
    pub discover_offer: Half,
    pub request_ack: Half,
}

impl Report {
    /// Exchanges that completed with a usable ACK.
    #[must_use]
    pub fn completed(&self) -> u64 {
        self.request_ack
            .received
            .saturating_sub(self.request_ack.rejected)
    }

    /// The fraction of started exchanges (DISCOVERs sent) that did not end in
    /// a usable ACK: a lost OFFER, a lost ACK and a NAK all count. 1.0 when
    /// nothing was sent, so a broken run never passes.
    #[must_use]
    #[allow(
        clippy::cast_precision_loss,
        reason = "packet counts of one run are far below 2^52"
    )]
    pub fn loss(&self) -> f64 {
        if self.discover_offer.sent == 0 {
            return 1.0;
        }
        1.0 - self.completed() as f64 / self.discover_offer.sent as f64
    }
}

/// Parses perfdhcp's report. A missing REQUEST-ACK block (no OFFER ever
/// came) counts as zeros; a missing rate line or DISCOVER-OFFER block means
/// perfdhcp did not run a test, which is an error.
pub fn parse(text: &str) -> Result<Report> {
    let mut report = Report::default();
    let mut rate = None;
    let mut saw_discover = false;
    let mut current: Option<&mut Half> = None;
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("Rate:") {
            let v = rest.split_whitespace().next().context("empty Rate: line")?;
            rate = Some(v.parse::<f64>().with_context(|| format!("Rate: {v:?}"))?);
        } else if line.starts_with("***Statistics for: DISCOVER-OFFER") {
            saw_discover = true;
            current = Some(&mut report.discover_offer);
        } else if line.starts_with("***Statistics for: REQUEST-ACK") {
            current = Some(&mut report.request_ack);
        } else if line.starts_with("***") {
            current = None;
        } else if let (Some(half), Some((key, value))) =
            (current.as_deref_mut(), line.split_once(':'))
        {
            let field = match key {
                "sent packets" => &mut half.sent,
                "received packets" => &mut half.received,
                "drops" => &mut half.drops,
                "rejected leases" => &mut half.rejected,
                _ => continue,
            };
            *field = value
                .trim()
                .parse()
                .with_context(|| format!("{key}: {:?}", value.trim()))?;
        }
    }
    let Some(rate) = rate else {
        bail!("perfdhcp printed no \"Rate:\" line")
    };
    if !saw_discover {
        bail!("perfdhcp printed no DISCOVER-OFFER statistics");
    }
    report.rate = rate;
    Ok(report)
}

/// The perfdhcp arguments for `rate` exchanges/s from `clients` clients
/// during `period` against `server` (`-p` takes whole seconds).
#[must_use]
pub fn args(rate: u32, clients: u32, period: Duration, server: &str) -> Vec<String> {
    vec![
        "-4".into(),
        "-l".into(),
        CLIENT_ADDR.into(),
        "-r".into(),
        rate.to_string(),
        "-R".into(),
        clients.to_string(),
        "-p".into(),
        period.as_secs().max(1).to_string(),
        server.into(),
    ]
}

/// Runs perfdhcp in the bench's client namespace, output to `log`, and
/// parses its report. perfdhcp exits non-zero when anything was dropped, so
/// only the report decides.
pub fn run(
    bench: &Bench,
    rate: u32,
    clients: u32,
    period: Duration,
    server: &str,
    log: &Path,
) -> Result<Report> {
    if log.exists() {
        std::fs::remove_file(log).with_context(|| format!("removing {}", log.display()))?;
    }
    let args = args(rate, clients, period, server);
    let mut niced = vec!["-n".to_string(), "-10".to_string(), "perfdhcp".to_string()];
    niced.extend(args.iter().cloned());
    let p = if std::env::var_os("NICE_PERFDHCP").is_some() {
        bench.spawn(&bench.client_ns(), "nice", &niced, log)?
    } else {
        bench.spawn(&bench.client_ns(), "perfdhcp", &args, log)?
    };
    // perfdhcp stops sending after the period and waits out its drop time (1 s).
    wait_exit(&p, period + Duration::from_secs(30), "perfdhcp")?;
    let text =
        std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    parse(&text).with_context(|| {
        format!(
            "perfdhcp {}; its output:\n{}",
            args.join(" "),
            tail(log, 40)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from `perfdhcp -4 -l 10.99.3.1 -r 2000 -R 100000 -p 5 10.99.0.10`
    /// against kea-dhcp4 2.2 (trimmed delay lines).
    const KEA_RUN: &str = "Running: perfdhcp -4 -l 10.99.3.1 -r 2000 -R 100000 -p 5 10.99.0.10
Scenario: basic.
Multi-thread mode enabled.
***Rate statistics***
Rate: 1995.02 4-way exchanges/second, expected rate: 2000

***Malformed Packets***
Malformed packets: 0
***Statistics for: DISCOVER-OFFER***
sent packets: 9999
received packets: 9988
drops: 11
drops ratio: 0.110011 %
orphans: 0
rejected leases: 0
non unique addresses: 0

min delay: 0.057 ms
collected packets: 0

***Statistics for: REQUEST-ACK***
sent packets: 9988
received packets: 9980
drops: 8
drops ratio: 0.08 %
orphans: 0
rejected leases: 3
non unique addresses: 0

min delay: 0.055 ms
collected packets: 0
";

    #[test]
    fn parses_both_halves_and_the_rate() {
        let r = parse(KEA_RUN).unwrap();
        assert!((r.rate - 1995.02).abs() < 1e-9);
        assert_eq!(
            r.discover_offer,
            Half {
                sent: 9999,
                received: 9988,
                drops: 11,
                rejected: 0
            }
        );
        assert_eq!(
            r.request_ack,
            Half {
                sent: 9988,
                received: 9980,
                drops: 8,
                rejected: 3
            }
        );
        assert_eq!(r.completed(), 9977);
        assert!((r.loss() - (1.0 - 9977.0 / 9999.0)).abs() < 1e-12);
    }

    #[test]
    fn no_offers_means_total_loss() {
        let text = "Rate: 0 4-way exchanges/second, expected rate: 200\n\
                    ***Statistics for: DISCOVER-OFFER***\nsent packets: 999\nreceived packets: 0\ndrops: 999\n";
        let r = parse(text).unwrap();
        assert_eq!(r.request_ack, Half::default());
        assert!((r.loss() - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn nothing_sent_is_total_loss_and_garbage_is_an_error() {
        assert!((Report::default().loss() - 1.0).abs() < f64::EPSILON);
        assert!(parse("perfdhcp: socket bind failed\n").is_err());
        assert!(
            parse("Rate: 10 4-way\n").is_err(),
            "no DISCOVER-OFFER block"
        );
        assert!(parse("Rate: x\n***Statistics for: DISCOVER-OFFER***\n").is_err());
    }

    #[test]
    fn args_follow_the_documented_command() {
        assert_eq!(
            args(500, 150, Duration::from_secs(10), "10.99.0.10").join(" "),
            "-4 -l 10.99.3.1 -r 500 -R 150 -p 10 10.99.0.10"
        );
    }
}
