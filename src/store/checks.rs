//! Checks that the SQL text agrees with the Rust definitions it cannot refer to: state codes (`crate::states`),
//! the staging tables' list, and each COPY writer's column count against its staging table.

use std::collections::BTreeSet;

use super::{copy::CopyWriter, job, job_error, job_run, job_spec, stage};
use crate::changes::{JobPhase, RowChanges};
use crate::states::{JobState, RunState, sql_list};

/// Every statement that mentions state codes.
fn statements() -> Vec<(&'static str, &'static str)> {
    stage::STATEMENTS.to_vec()
}

fn expect(name: &str, sql: &str, fragment: &str) {
    let squeeze = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(squeeze(sql).contains(&squeeze(fragment)), "{name} should contain `{fragment}`");
}

/// `CASE <expr> WHEN a THEN x WHEN b THEN y … ELSE z END`, from pairs.
fn case(expr: &str, pairs: impl IntoIterator<Item = (i16, i16)>, otherwise: i16) -> String {
    let arms: String = pairs.into_iter().map(|(when, then)| format!(" WHEN {when} THEN {then}")).collect();
    format!("CASE {expr}{arms} ELSE {otherwise} END")
}

#[test]
fn every_state_list_in_sql_is_one_the_enums_define() {
    let known: BTreeSet<String> = [
        sql_list(JobState::TERMINAL.map(JobState::code)),
        sql_list(JobState::PREEMPTIBLE.map(JobState::code)),
        sql_list(JobState::WITH_RUN.map(JobState::code)),
        sql_list(RunState::ACTIVE.map(RunState::code)),
    ]
    .into();
    for (name, sql) in statements() {
        for (i, _) in sql.match_indices("IN (") {
            let rest = &sql[i + 4..];
            let list = &rest[..rest.find(')').expect("closing parenthesis")];
            if list.chars().all(|c| c.is_ascii_digit() || c == ',' || c == ' ') {
                assert!(known.contains(list), "{name}: the list ({list}) is not derived from crate::states");
            }
        }
    }
}

#[test]
fn job_statements_use_the_job_state_codes() {
    let code = JobState::code;
    let terminal = sql_list(JobState::TERMINAL.map(code));
    expect("job::UPDATE", job::UPDATE, &format!("j.state IN ({terminal}) AS terminal"));
    let preemptible = sql_list(JobState::PREEMPTIBLE.map(code));
    expect("job::UPDATE", job::UPDATE, &format!("(c.state IN ({preemptible}) AND u.pre_at IS NOT NULL)"));
    expect(
        "job::UPDATE",
        job::UPDATE,
        &format!("WHEN d.apply_preemption THEN {}::smallint", code(JobState::Preempted)),
    );
    // The phase a stored state implies, and the state a phase puts the job in (crate::changes::JobPhase).
    let phases = [JobPhase::Leased, JobPhase::Pending, JobPhase::Running];
    let state_of = case("d.b_phase", phases.map(|p| (p as i16, p.state())), JobPhase::Requeued.state());
    expect("job::UPDATE", job::UPDATE, &state_of);
    let phase_of: String = phases.map(|p| format!(" WHEN {} THEN {}", p.state(), p as i16)).concat();
    expect("job::UPDATE", job::UPDATE, &format!("CASE j.state{phase_of} WHEN {} THEN", JobPhase::Requeued.state()));
}

#[test]
fn run_statements_use_the_run_state_codes() {
    let active = sql_list(RunState::ACTIVE.map(RunState::code));
    expect("job_run::UPDATE", job_run::UPDATE, &format!("r.job_run_state NOT IN ({active}) AS ended"));
    let rank = |expr: &str| case(expr, RunState::ACTIVE.map(|s| (s.code(), s.active_rank())), -1);
    expect("job_run::UPDATE", job_run::UPDATE, &format!("{} AS rank", rank("r.job_run_state")));
    expect("job_run::UPDATE", job_run::UPDATE, &format!("({}) > d.rank", rank("d.active_state")));
}

/// The columns of a staging table, as its `CREATE TEMP TABLE` statement declares them.
fn staging_columns(table: &str) -> usize {
    let ddl = stage::STAGING.concat();
    let head = format!("CREATE TEMP TABLE IF NOT EXISTS {table} (");
    let start = ddl.find(&head).unwrap_or_else(|| panic!("no staging table {table}")) + head.len();
    let body = &ddl[start..start + ddl[start..].find(") ON COMMIT").expect("end of the column list")];
    body.split(',').filter(|c| !c.trim().is_empty()).count()
}

#[test]
fn the_staging_tables_are_the_ones_listed() {
    let ddl = stage::STAGING.concat();
    let created: BTreeSet<&str> = ddl
        .match_indices("CREATE TEMP TABLE IF NOT EXISTS ")
        .map(|(i, m)| ddl[i + m.len()..].split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(created, stage::TABLES.into_iter().collect::<BTreeSet<_>>());
}

#[test]
fn each_copy_writer_fills_every_column_of_its_staging_table() {
    let changes = RowChanges::default();
    let writers: [(&str, CopyWriter); 8] = [
        (job::COPY_CAS, job::copy_cas(std::iter::empty())),
        (job::COPY_NEW, job::copy_new(std::iter::empty())),
        (job::COPY_UPDATE, job::copy_update(changes.job_updates.iter())),
        (job::COPY_PROGRESS, job::copy_progress(changes.job_updates.iter(), &BTreeSet::new())),
        (job_spec::COPY_NEW, job_spec::copy_new(changes.job_specs.values())),
        (job_run::COPY_NEW, job_run::copy_new(std::iter::empty())),
        (job_run::COPY_UPDATE, job_run::copy_update(changes.run_updates.iter())),
        (job_error::COPY_NEW, job_error::copy_new(changes.job_errors.values())),
    ];
    let mut tables = BTreeSet::new();
    for (statement, writer) in writers {
        let table = statement.strip_prefix("COPY ").and_then(|s| s.split_whitespace().next()).expect("COPY <table>");
        assert!(stage::TABLES.contains(&table), "{statement}: not a staging table");
        assert_eq!(writer.columns() as usize, staging_columns(table), "{table}: COPY fields vs. table columns");
        tables.insert(table);
    }
    assert_eq!(tables.len(), stage::TABLES.len(), "every staging table has a COPY writer");
}

/// The column names of a staging table, in order.
fn staging_column_names(table: &str) -> Vec<String> {
    let ddl = stage::STAGING.concat();
    let head = format!("CREATE TEMP TABLE IF NOT EXISTS {table} (");
    let start = ddl.find(&head).unwrap_or_else(|| panic!("no staging table {table}")) + head.len();
    let body = &ddl[start..start + ddl[start..].find(") ON COMMIT").expect("end of the column list")];
    body.split(',').filter_map(|c| c.split_whitespace().next()).map(str::to_string).collect()
}

/// The column list of `COPY table (a, b, …) FROM …`.
fn copy_columns(statement: &str) -> Vec<String> {
    let open = statement.find('(').expect("a column list");
    let close = statement.find(')').expect("end of the column list");
    statement[open + 1..close].split(',').map(|c| c.trim().to_string()).collect()
}

#[test]
fn direct_copies_name_the_staging_columns_in_their_order() {
    // One encoder writes both the staging table and the real one: the column lists must agree, name by name.
    for (direct, table) in [
        (job::COPY_DIRECT, "li_job_new"),
        (job_run::COPY_DIRECT, "li_run_new"),
        (job_spec::COPY_DIRECT, "li_job_spec_new"),
    ] {
        assert_eq!(copy_columns(direct), staging_column_names(table), "{direct}");
    }
    assert_eq!(copy_columns(job::COPY_NEW_KEYS), staging_column_names("li_job_new")[..1]);
    assert_eq!(copy_columns(job_run::COPY_NEW_KEYS), staging_column_names("li_run_new")[..2]);
}
