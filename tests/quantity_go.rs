//! `lookout_ingester::convert::quantity` against Go: every line of `fixtures/quantities-go.tsv` was produced by
//! running k8s.io/apimachinery v0.32.11's `resource.Quantity` (the version Armada builds with) on the input —
//! `ParseQuantity` then `String()`, and sequences of Armada's `addResourcesToList` / `maxResourcesToList` on one
//! resource — so the crate must print exactly what Go printed.

use lookout_ingester::convert::quantity::{Format, Quantity, Slot};

const TABLE: &str = include_str!("fixtures/quantities-go.tsv");

fn format_name(f: Format) -> &'static str {
    match f {
        Format::DecimalExponent => "DecimalExponent",
        Format::BinarySI => "BinarySI",
        Format::DecimalSI => "DecimalSI",
    }
}

#[test]
fn parse_and_string_match_go() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for line in TABLE.lines().filter(|l| l.starts_with("s\t")) {
        let f: Vec<&str> = line.split('\t').collect();
        let got = match Quantity::parse(f[1].as_bytes()) {
            Ok(q) => format!("{}\t{}", q.to_go_string(), format_name(q.format())),
            Err(_) => "ERR".to_string(),
        };
        let want = f[2..].join("\t");
        if got != want {
            failures.push(format!("{:?}: Go {want:?}, we {got:?}", f[1]));
        }
        checked += 1;
    }
    assert!(checked > 3000, "the table has {checked} parse lines");
    assert!(failures.is_empty(), "{} of {checked} differ from Go:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn sums_and_maxima_match_armadas_scheduling_requirements() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for line in TABLE.lines().filter(|l| l.starts_with("mix\t")) {
        let f: Vec<&str> = line.split('\t').collect();
        let (ops, want) = (&f[1..f.len() - 1], f[f.len() - 1]);
        let mut slot = Slot::default();
        for op in ops {
            let q = Quantity::parse(&op.as_bytes()[1..]).expect("the table's operands parse");
            match &op[..1] {
                "+" => slot.add(&q).expect("in range"),
                _ => slot.max(&q),
            }
        }
        let got = slot.get().map(Quantity::to_go_string).unwrap_or_else(|| "ABSENT".into());
        if got != want {
            failures.push(format!("{ops:?}: Go {want:?}, we {got:?}"));
        }
        checked += 1;
    }
    assert!(checked > 1000, "the table has {checked} sum lines");
    assert!(failures.is_empty(), "{} of {checked} differ from Go:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn written_form_is_a_fixed_point() {
    // What we write must read back as itself, or Lookout would show something else than what is stored.
    for line in TABLE.lines().filter(|l| l.starts_with("s\t")) {
        let f: Vec<&str> = line.split('\t').collect();
        let Ok(q) = Quantity::parse(f[1].as_bytes()) else { continue };
        let written = q.to_go_string();
        let again = Quantity::parse(written.as_bytes()).expect("our output parses").to_go_string();
        assert_eq!(again, written, "input {:?}", f[1]);
    }
}
