//! template.yaml against the configuration: every variable `src/config.rs` documents is
//! set on the function from a template parameter, and each parameter's default is the
//! variable's default — so a deployed stack can tune what the README says it can, and
//! behaves as documented when left alone. (cfn-lint and `sam validate --lint` check the
//! template itself in `.ci/run`.)

const TEMPLATE: &str = include_str!("../template.yaml");
const CONFIG: &str = include_str!("../src/config.rs");

/// (variable, documented default) from the table in `src/config.rs`'s module doc.
fn documented() -> Vec<(String, String)> {
    CONFIG
        .lines()
        .filter_map(|l| l.strip_prefix("//! | `"))
        .filter_map(|l| {
            let (name, rest) = l.split_once('`')?;
            let default = rest.rsplit('|').nth(1)?.trim();
            Some((name.to_string(), default.to_string()))
        })
        .collect()
}

/// The parameter the function's environment sets `variable` from.
fn parameter_of(variable: &str) -> Option<&'static str> {
    let needle = format!(" {variable}: !Ref ");
    TEMPLATE
        .lines()
        .find_map(|l| l.split_once(&needle).map(|(_, p)| p.trim()))
}

/// The `Default:` of parameter `name`.
fn default_of(name: &str) -> Option<String> {
    let start = TEMPLATE.find(&format!("\n  {name}:\n"))?;
    TEMPLATE[start + 1..]
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .find_map(|l| l.trim().strip_prefix("Default:"))
        .map(|d| d.trim().trim_matches('"').trim_matches('\'').to_string())
}

#[test]
fn every_documented_variable_is_a_template_parameter_with_its_default() {
    let vars = documented();
    assert!(vars.len() >= 15, "the table in src/config.rs: {vars:?}");
    for (var, default) in &vars {
        let param = parameter_of(var)
            .unwrap_or_else(|| panic!("template.yaml does not set {var} from a parameter"));
        // The table's default: a number, possibly followed by "(64 MiB)", or `text`.
        let want = default
            .split_whitespace()
            .next()
            .unwrap()
            .trim_matches('`')
            .to_string();
        // SourceBucket/DestinationBucket must be given; EXPECTED_BUCKET_OWNER is off
        // when its parameter is empty.
        if want == "required" || want == "none" {
            continue;
        }
        let got = default_of(param).unwrap_or_else(|| panic!("parameter {param}: no Default"));
        assert_eq!(
            got.to_ascii_lowercase(),
            want.to_ascii_lowercase(),
            "{var}: parameter {param}'s default"
        );
    }
}

/// The `Columns` of the Glue table `resource`, as (name, type).
fn glue_columns(resource: &str) -> Vec<(String, String)> {
    let start = TEMPLATE
        .find(&format!("\n  {resource}:\n"))
        .unwrap_or_else(|| panic!("{resource}"));
    let table = &TEMPLATE[start + 1..];
    // Resources are separated by a blank line.
    let end = table.find("\n\n").unwrap_or(table.len());
    let columns = &table[table.find("          Columns:").expect("Columns")..end];
    columns
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- { Name: "))
        .map(|l| {
            let (name, rest) = l.split_once(", Type: ").expect("Name, Type");
            let ty = match rest.strip_prefix('"') {
                Some(quoted) => quoted.split_once('"').unwrap().0,
                None => rest.split([',', ' ']).next().unwrap(),
            };
            (name.to_string(), ty.to_string())
        })
        .collect()
}

/// Both Glue tables declare AWS's CloudTrail table exactly as `src/table.rs` does (names,
/// STRUCTs, order), Parquet's with eventtime_ts and otherfields after it.
#[test]
fn the_glue_tables_are_the_documented_table() {
    use cloudtrail_aggregator::table::{table_columns, TableFormat};
    assert_eq!(
        glue_columns("GlueTable"),
        table_columns(TableFormat::Ndjson)
    );
    assert_eq!(
        glue_columns("GlueParquetTable"),
        table_columns(TableFormat::Parquet)
    );
    assert!(TEMPLATE.contains("SerializationLibrary: org.openx.data.jsonserde.JsonSerDe"));
}
