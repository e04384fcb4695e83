//! Reading Prometheus text as the nodes and agents serve it: one sample's value, a histogram's
//! buckets (summed over several sources), and a quantile between two reads of them.

/// The value of a sample line `name{...}` (first match with all `labels`) in a Prometheus text.
pub(super) fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .find(|l| labels.iter().all(|lab| l.contains(lab)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// A histogram's cumulative bucket counts (upper bound in seconds → count).
pub(super) fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    text.lines()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| {
            let le = l.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, l.rsplit(' ').next()?.parse().ok()?))
        })
        .collect()
}

/// Histograms with the same buckets (one per agent) added up, bucket by bucket.
pub(super) fn sum_buckets(all: impl IntoIterator<Item = Vec<(f64, f64)>>) -> Vec<(f64, f64)> {
    let mut sum: Vec<(f64, f64)> = Vec::new();
    for one in all {
        for (le, n) in one {
            match sum.iter_mut().find(|b| b.0 == le) {
                Some(b) => b.1 += n,
                None => sum.push((le, n)),
            }
        }
    }
    sum.sort_by(|a, b| a.0.total_cmp(&b.0));
    sum
}

/// The upper bound of the bucket holding quantile `q` of what was observed between two reads.
pub(super) fn bucket_quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let delta: Vec<(f64, f64)> =
        after.iter().map(|(le, n)| (*le, n - before.iter().find(|b| b.0 == *le).map_or(0.0, |b| b.1))).collect();
    let total = delta.last()?.1;
    (total > 0.0).then(|| delta.iter().find(|(_, n)| *n >= q * total).map_or(f64::INFINITY, |b| b.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quantile_is_the_upper_bound_of_its_bucket_between_two_reads() {
        let text = "x_bucket{le=\"0.001\"} 10\nx_bucket{le=\"0.01\"} 60\nx_bucket{le=\"+Inf\"} 100\n";
        let before = buckets(text, "x");
        let after = buckets("x_bucket{le=\"0.001\"} 10\nx_bucket{le=\"0.01\"} 150\nx_bucket{le=\"+Inf\"} 200\n", "x");
        // Between the reads: 0 under 1 ms, 90 under 10 ms, 100 in all.
        assert_eq!(bucket_quantile(&before, &after, 0.5), Some(0.01));
        assert_eq!(bucket_quantile(&before, &after, 0.99), Some(f64::INFINITY));
        assert_eq!(bucket_quantile(&before, &before, 0.5), None);
        assert_eq!(metric("a_b 1\na{g=\"x\"} 2\na{g=\"y\"} 3\n", "a", &["g=\"y\""]), Some(3.0));
    }

    #[test]
    fn histograms_of_several_agents_add_up_bucket_by_bucket() {
        let one = buckets("x_bucket{le=\"0.01\"} 3\nx_bucket{le=\"+Inf\"} 4\n", "x");
        let two = buckets("x_bucket{le=\"+Inf\"} 10\nx_bucket{le=\"0.01\"} 7\n", "x");
        assert_eq!(sum_buckets([one, two]), vec![(0.01, 10.0), (f64::INFINITY, 14.0)]);
    }
}
