//! Reading a node's Prometheus metrics the way an operator would: `curl`
//! from inside the node's namespace (the API listens on the node address,
//! which only that network can reach), then picking series out of the text.

use std::time::Duration;

use anyhow::{Context, Result};

use crate::Lab;

/// How long one scrape may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET https://<node>:7481/metrics` of node `i` (open, verified against
/// the node's cluster CA), as text.
pub fn scrape(lab: &Lab, i: usize) -> Result<String> {
    let url = format!("{}/metrics", lab.node_api(i));
    let ca = lab.node_ca_path(i);
    let ca = ca.to_str().context("lab paths are UTF-8")?;
    lab.exec_ok(
        &lab.node_ns(i),
        "curl",
        &["-sS", "--fail", "--cacert", ca, &url],
        SCRAPE_TIMEOUT,
    )
    .with_context(|| format!("scraping {url}"))
}

/// The sum of every series of `name` whose labels include all of `labels`,
/// or `None` if no series matched. Summing lets a caller ask for a whole
/// family (`&[]`) or one series (all its labels).
///
/// Lines look like `name{a="x",b="y"} 12` or `name 12` (`OpenMetrics` text);
/// label values in our metrics never hold `,`, `"` or `}`.
#[must_use]
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((n, rest)) => (n, rest.strip_suffix('}').unwrap_or(rest)),
            None => (series, ""),
        };
        if series_name != name {
            continue;
        }
        let have: Vec<(&str, &str)> = series_labels
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim().trim_matches('"')))
            .collect();
        if labels.iter().all(|want| have.contains(want)) {
            if let Ok(v) = value.trim().parse::<f64>() {
                *total.get_or_insert(0.0) += v;
            }
        }
    }
    total
}

/// The current value of a counter on node `i` (see [`sum`]); a labelled
/// series that was never incremented does not exist yet and reads as 0.
/// Panics if the node cannot be scraped.
#[must_use]
pub fn counter(lab: &Lab, i: usize, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = scrape(lab, i).unwrap_or_else(|e| panic!("node {i} metrics: {e:#}"));
    sum(&text, name, labels).unwrap_or(0.0)
}

/// Polls [`counter`] until it exceeds `baseline` (some counters are exported
/// periodically, e.g. XDP's once per second) and returns the value; panics
/// after `timeout` with the last value.
#[must_use]
pub fn wait_counter_above(
    lab: &Lab,
    i: usize,
    name: &str,
    labels: &[(&str, &str)],
    baseline: f64,
    timeout: Duration,
) -> f64 {
    let mut last = baseline;
    if crate::wait_until(timeout, || {
        last = counter(lab, i, name, labels);
        last > baseline
    }) {
        return last;
    }
    panic!("{name}{labels:?} on node {i} stayed at {last} (baseline {baseline}) for {timeout:?}");
}

#[cfg(test)]
mod tests {
    use super::sum;

    const TEXT: &str = "# HELP tandem_x_total x\n# TYPE tandem_x counter\n\
        tandem_xdp_packets_total{proto=\"dhcp\",verdict=\"pass\"} 7\n\
        tandem_xdp_packets_total{proto=\"dhcp\",verdict=\"drop\"} 2\n\
        tandem_xdp_packets_total{proto=\"tftp\",verdict=\"pass\"} 100\n\
        tandem_dhcp_malformed_total 3\n# EOF\n";

    #[test]
    fn picks_and_sums_series() {
        assert_eq!(sum(TEXT, "tandem_dhcp_malformed_total", &[]), Some(3.0));
        assert_eq!(
            sum(
                TEXT,
                "tandem_xdp_packets_total",
                &[("proto", "dhcp"), ("verdict", "drop")]
            ),
            Some(2.0)
        );
        assert_eq!(
            sum(TEXT, "tandem_xdp_packets_total", &[("proto", "dhcp")]),
            Some(9.0)
        );
        assert_eq!(sum(TEXT, "tandem_xdp_packets_total", &[]), Some(109.0));
        assert_eq!(
            sum(TEXT, "tandem_xdp_packets_total", &[("proto", "arp")]),
            None
        );
        assert_eq!(sum(TEXT, "tandem_dhcp_malformed", &[]), None);
    }
}
