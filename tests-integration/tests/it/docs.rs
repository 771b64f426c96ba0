//! `docs/failures.md` lists each failure with the tests that show it; those tests must exist.
//! The README's examples run: its `rust` blocks as doc tests of `procpool`, and the one it
//! marks `ignore` here.

use std::path::Path;

use tests_integration::{assert_no_children, finish, pool, serial};

use crate::tasks::square;

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

// README's "Awaiting results" example, verbatim. README marks it `rust,ignore`, as it uses a
// `square` task it does not declare; here `square` is `tasks::square`, and
// `the_readmes_async_example_runs` checks that README still says exactly this.
// README BEGIN
async fn squares(pool: &procpool::Pool) -> Result<Vec<u64>, procpool::Error> {
    let squares = pool.map_async(square, 1..=4)?.await?;
    Ok(squares)
}
// README END

/// The fenced blocks of `markdown`: the info string and the body of each.
fn fenced_blocks(markdown: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, String)> = None;
    for line in markdown.lines() {
        match (open.take(), line.strip_prefix("```")) {
            (None, Some(info)) => open = Some((info.trim().to_owned(), String::new())),
            (None, None) => {}
            (Some(block), Some("")) => blocks.push(block),
            (Some((info, mut body)), _) => {
                body.push_str(line);
                body.push('\n');
                open = Some((info, body));
            }
        }
    }
    assert!(open.is_none(), "a fenced block is not closed");
    blocks
}

fn readme() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(root.join("../README.md")).unwrap()
}

/// The README is compiled as doc tests of `procpool` (`cargo test --doc -p procpool`), which
/// treat every block that says no language as Rust: so each block names its language, and
/// only the example run here and the Redis one are kept from running there.
#[test]
fn the_readmes_rust_blocks_are_doc_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("../crates/procpool/src/lib.rs")).unwrap();
    assert!(
        lib.contains("#[cfg(doctest)]\n#[doc = include_str!(\"../../../README.md\")]"),
        "procpool's lib.rs no longer includes README.md as doc tests"
    );
    let blocks = fenced_blocks(&readme());
    assert!(
        blocks
            .iter()
            .any(|(info, body)| info == "rust" && body.contains("Pool::builder()"))
    );
    for (info, body) in &blocks {
        assert!(!info.is_empty(), "a README block says no language:\n{body}");
        if info.starts_with("rust") && info != "rust" {
            assert_eq!(info, "rust,ignore", "{body}");
            // The async example runs below; the Redis one needs a feature the README's doc
            // tests are built without, and tests/redis runs its calls.
            assert!(
                body.contains("async fn squares") || body.contains(".redis("),
                "only the async and Redis examples are ignored: {body}"
            );
        }
    }
}

#[test]
fn the_readmes_async_example_runs() {
    let _serial = serial();
    let source = include_str!("docs.rs");
    let ours = source
        .split_once("// README BEGIN\n")
        .and_then(|(_, rest)| rest.split_once("// README END\n"))
        .map(|(example, _)| example)
        .unwrap();
    let blocks = fenced_blocks(&readme());
    assert!(
        blocks
            .iter()
            .any(|(info, body)| info == "rust,ignore" && body == ours),
        "README's async example differs from the one here:\n{ours}"
    );
    let pool = pool(2);
    assert_eq!(
        futures_executor::block_on(squares(&pool)).unwrap(),
        [1, 4, 9, 16]
    );
    finish(pool);
}
