//! `docs/failures.md` lists each failure with the tests that show it; those tests must exist.

use std::path::Path;

use tests_integration::{assert_no_children, serial};

/// The backticked `module::test` names in the table, `module` being a file of this suite.
fn named_tests(table: &str, suite: &Path) -> Vec<(String, String)> {
    let mut found = Vec::new();
    for token in table.split('`').skip(1).step_by(2) {
        let Some((module, name)) = token.split_once("::") else {
            continue;
        };
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '*')
        };
        if valid(module) && valid(name) {
            // A test module that is not there (renamed, say) must not hide its rows.
            assert!(
                suite.join(format!("{module}.rs")).exists(),
                "docs/failures.md names `{module}::{name}`, but there is no tests/it/{module}.rs"
            );
            found.push((module.to_owned(), name.to_owned()));
        }
    }
    found
}

#[test]
fn the_failure_table_names_real_tests() {
    let _serial = serial();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let table = std::fs::read_to_string(root.join("../docs/failures.md")).unwrap();
    let suite = root.join("tests/it");
    let named = named_tests(&table, &suite);
    assert!(named.len() >= 30, "only {} tests named", named.len());
    for (module, name) in named {
        let source = std::fs::read_to_string(suite.join(format!("{module}.rs"))).unwrap();
        let exists = match name.strip_suffix('*') {
            // A family of generated tests: its cases share the prefix.
            Some(prefix) => source.contains(prefix),
            // A test function, or a case of a table macro (`name: ...`).
            None => {
                source.contains(&format!("fn {name}()"))
                    || source
                        .lines()
                        .any(|line| line.trim_start().starts_with(&format!("{name}:")))
            }
        };
        assert!(
            exists,
            "docs/failures.md names `{module}::{name}`, which does not exist"
        );
    }
    assert_no_children();
}
