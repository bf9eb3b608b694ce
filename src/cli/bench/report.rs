//! One JSON line per run, fields in a fixed order (the NATS bench's fields first).
use hdrhistogram::Histogram;
use serde_json::Value;

#[derive(Default)]
pub struct Line {
    fields: Vec<(&'static str, Value)>,
}

impl Line {
    pub fn new() -> Line {
        Line::default()
    }

    pub fn put(&mut self, key: &'static str, value: impl Into<Value>) -> &mut Line {
        self.fields.push((key, value.into()));
        self
    }

    /// p50_us, p90_us, p99_us, p999_us, max_us (with `prefix` before each name).
    pub fn latency(&mut self, prefix: &'static str, hist: &Histogram<u64>) -> &mut Line {
        let q = |q: f64| if hist.is_empty() { 0 } else { hist.value_at_quantile(q) };
        let names: [(&'static str, u64); 5] = match prefix {
            "" => [("p50_us", q(0.5)), ("p90_us", q(0.9)), ("p99_us", q(0.99)), ("p999_us", q(0.999)), ("max_us", hist.max())],
            "send_" => [("send_p50_us", q(0.5)), ("send_p90_us", q(0.9)), ("send_p99_us", q(0.99)), ("send_p999_us", q(0.999)), ("send_max_us", hist.max())],
            other => panic!("unknown latency prefix {other}"),
        };
        for (k, v) in names {
            self.put(k, v);
        }
        self
    }

    pub fn render(&self) -> String {
        let body: Vec<String> = self
            .fields
            .iter()
            .map(|(k, v)| format!("{}:{}", Value::String((*k).to_string()), v))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    pub fn print(&self) {
        println!("{}", self.render());
    }
}

pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Median of a non-empty list (the lower middle for an even count... averaged, as usual).
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_field_order_and_escapes() {
        let mut line = Line::new();
        line.put("system", "raft\"mq").put("replicas", 3).put("msgs_per_s", 1.5);
        assert_eq!(line.render(), r#"{"system":"raft\"mq","replicas":3,"msgs_per_s":1.5}"#);
    }

    #[test]
    fn median_of_even_and_odd() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
