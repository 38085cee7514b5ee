//! The few lines of the Prometheus text format that `tandem top` reads:
//! `name{label="value",…} value`, comments skipped. Pure; a line that does
//! not parse is skipped (a newer daemon may export what this one does not know).

/// One sample of a scrape.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    #[must_use]
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Every sample of `text`.
#[must_use]
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' ']).unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        let (ls, after) = parse_labels(r)?;
        labels = ls;
        rest = after;
    }
    // The value, then an optional timestamp.
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `k="v",…}` → the labels and what follows the `}`.
fn parse_labels(mut s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(r) = s.strip_prefix('}') {
            return Some((out, r));
        }
        let eq = s.find('=')?;
        let key = s[..eq].trim().to_owned();
        s = s[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '"' => break i,
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                c => value.push(c),
            }
        };
        out.push((key, value));
        s = &s[end + 1..];
    }
}

/// The sum of the samples named `name` whose labels include every pair of `filter`.
#[must_use]
pub fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && filter.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_names_labels_values_and_skips_the_rest() {
        let text = "# HELP tandem_raft_term Current Raft term.\n\
                    # TYPE tandem_raft_term gauge\n\
                    tandem_raft_term 7\n\
                    tandem_dhcp_leases{subnet=\"10.99.0.0/16\",state=\"bound\"} 12\n\
                    tandem_dhcp_leases{subnet=\"10.99.0.0/16\",state=\"free\"} 188 1700000000\n\
                    weird{a=\"x\\\"y,}\"} 1.5e3\n\
                    broken{a=\"x} 3\n\
                    tandem_raft_commit_seconds_bucket{le=\"+Inf\"} 4\n";
        let s = parse(text);
        assert_eq!(s.len(), 5, "{s:?}");
        assert_eq!(s[0].name, "tandem_raft_term");
        assert!((s[0].value - 7.0).abs() < f64::EPSILON);
        assert_eq!(s[1].label("state"), Some("bound"));
        assert_eq!(s[3].label("a"), Some("x\"y,}"));
        assert!((s[3].value - 1500.0).abs() < f64::EPSILON);
        assert!((sum(&s, "tandem_dhcp_leases", &[]) - 200.0).abs() < f64::EPSILON);
        assert!((sum(&s, "tandem_dhcp_leases", &[("state", "free")]) - 188.0).abs() < f64::EPSILON);
        assert!(sum(&s, "tandem_nothing", &[]).abs() < f64::EPSILON);
    }
}
