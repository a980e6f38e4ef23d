//! `cargo xtask link-order`: the functions the gateway runs, for the linker to put first.
//!
//! A process maps its binary's code in windows of up to 64 KB around each page it touches (the
//! kernel's fault-around), so start-up and request code scattered over 20 MB of text kept about
//! 10 MB of it resident, though only about 3 MB of functions ever run. Callgrind records every
//! function that runs while the gateway starts with the bench's 10,000 routes (from the folder,
//! then from the fake API server), serves HTTP/1.1 (T1's load) and HTTP/2 over TLS (T4's),
//! accepts and parks thousands of idle connections, plain and TLS (T5's), and drains. Hottest
//! first, their symbol names go to `gateway-userspace/link-order.txt`, which build.rs hands to
//! lld (`--symbol-ordering-file`). Names a later build no longer has (changed code, updated
//! crates) are skipped by the linker: rerun this after updating dependencies.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::profile::Load;
use super::sut::{Kind, Options, Sut};
use super::{ApiServer, Backend, build_release, fixtures, test_program};
use crate::root;

/// The order file, from the repository's root.
const ORDER_FILE: &str = "gateway-userspace/link-order.txt";

/// Each load's length under callgrind (about fifty times slower than native).
const LOAD: Duration = Duration::from_secs(3);

pub fn run() -> Result<()> {
    crate::install_packages(&["valgrind", "wrk", "nghttp2-client"])?;
    build_release()?;
    let gateway = root().join("target/release/gateway").canonicalize()?;
    let work = root().join("bench/work");
    let big = fixtures::generate(&work, 10_000)?;
    let _backend = Backend::start()?;

    println!(
        "== the gateway under callgrind: 10,000 routes from the folder, T1's, T4's and T5's loads"
    );
    let out = work.join("callgrind-folder.out");
    let sut = Sut::start(Kind::Gateway, &big, &gateway, callgrind(&out))?;
    for load in [Load::Http1, Load::Http2Tls] {
        load.run(&big, LOAD)?;
    }
    // T5's path (a connection accepted, served once and parked): where its code lies decides
    // the file pages each idle connection touches. Fewer than T5's 9,000, which callgrind
    // would take minutes to serve; what runs is the same.
    super::idle_connections(&sut, 2_000, false)?;
    super::idle_connections(&sut, 200, true)?;
    sut.terminate()?;
    let from_folder = costs(&std::fs::read_to_string(&out)?, &gateway)?;

    println!("== the gateway under callgrind: 10,000 routes from the API server");
    let api = ApiServer::start(
        &test_program("fake-apiserver")?,
        &[
            big.manifests().join("services.yaml"),
            fixtures::api_ingresses(&work, 10_000)?,
        ],
    )?;
    let out = work.join("callgrind-kube.out");
    let options = Options {
        kubeconfig: Some(api.kubeconfig.clone()),
        ..callgrind(&out)
    };
    let sut = Sut::start(Kind::Gateway, &big, &gateway, options)?;
    Load::Http1.run(&big, LOAD)?;
    sut.terminate()?;
    let from_api_server = costs(&std::fs::read_to_string(&out)?, &gateway)?;
    fixtures::generate(&work, 100)?;

    let order = root().join(ORDER_FILE);
    std::fs::write(&order, order_file(&[from_folder, from_api_server]))?;
    println!(
        "  {} lists {} functions (rebuild to apply)",
        order.display(),
        ordered_functions(&std::fs::read_to_string(&order)?).len()
    );
    Ok(())
}

/// Says how many of the order file's functions `binary` does not have: a function whose name
/// changed since the file was written (a new signature, an updated crate, another build's
/// `.llvm.` suffix) is left out of the packed text and costs a window of pages of its own.
pub fn report_missing(binary: &Path) -> Result<()> {
    let order = std::fs::read_to_string(root().join(ORDER_FILE))?;
    let listed = ordered_functions(&order);
    let symbols = crate::output(Command::new("nm").arg("--defined-only").arg(binary))?;
    let defined: HashSet<&str> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    let missing = listed
        .iter()
        .filter(|name| !defined.contains(*name))
        .count();
    println!(
        "link order: {missing} of the {} functions of {ORDER_FILE} are not in {} (rerun `cargo xtask link-order` when they are many)",
        listed.len(),
        binary.display()
    );
    Ok(())
}

fn callgrind(out: &Path) -> Options {
    Options {
        under: vec![
            "valgrind".into(),
            "--tool=callgrind".into(),
            "--demangle=no".into(),
            format!("--callgrind-out-file={}", out.display()),
        ],
        ..Options::default()
    }
}

/// The function names of an order file, in order (its comment lines left out).
fn ordered_functions(order: &str) -> Vec<&str> {
    order.lines().filter(|l| !l.starts_with('#')).collect()
}

/// The file for lld: a comment, then one symbol per line. The functions every run used come
/// first, then each run's own, each group the most instructions first: a gateway reading the
/// folder then touches one stretch of the text, and one reading an API server another.
fn order_file(runs: &[HashMap<String, u64>]) -> String {
    let mut text = String::from(
        "# The gateway's functions that run at start and per request, grouped by the runs that\n\
         # used them, the most instructions first: lld puts them at the front of the text\n\
         # (--symbol-ordering-file, see build.rs). Written by `cargo xtask link-order`; names a\n\
         # build no longer has are skipped.\n",
    );
    let mut written = HashSet::new();
    let mut write = |functions: Vec<(&String, u64)>| {
        let mut functions = functions;
        functions.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
        for (name, _) in functions {
            if written.insert(name.clone()) {
                text.push_str(name);
                text.push('\n');
            }
        }
    };
    let in_every_run = runs
        .first()
        .into_iter()
        .flatten()
        .filter(|(name, _)| runs.iter().all(|run| run.contains_key(*name)))
        .map(|(name, _)| (name, runs.iter().map(|run| run[name]).sum()))
        .collect();
    write(in_every_run);
    for run in runs {
        write(run.iter().map(|(name, cost)| (name, *cost)).collect());
    }
    text
}

/// The instructions each function of `binary` ran (its own, not its callees') in a callgrind
/// output file. Callgrind names an object or function once, as `fn=(7) name`, and then by its
/// number alone, `fn=(7)`; the cost lines after a `calls=` line are the call's inclusive cost,
/// which belongs to the callee; a recursive call's function is `name'2`.
fn costs(callgrind: &str, binary: &Path) -> Result<HashMap<String, u64>> {
    let binary = binary.to_string_lossy();
    let mut costs = HashMap::new();
    let mut objects = HashMap::new();
    let mut functions = HashMap::new();
    let mut object = String::new();
    let mut function: Option<String> = None;
    let mut call_cost_next = false;
    for line in callgrind.lines() {
        let Some((key, value)) = line.split_once('=') else {
            if call_cost_next {
                call_cost_next = false;
            } else if let Some(function) = &function
                && line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c))
            {
                let instructions = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.parse::<u64>().ok())
                    .unwrap_or(0);
                *costs.entry(function.clone()).or_default() += instructions;
            }
            continue;
        };
        match key {
            "ob" => object = named(&mut objects, value)?,
            "cob" => _ = named(&mut objects, value)?,
            "fn" => {
                let name = named(&mut functions, value)?;
                let symbol = name.split('\'').next().unwrap_or_default().to_string();
                function = (object == binary).then_some(symbol);
            }
            "cfn" => _ = named(&mut functions, value)?,
            "calls" => call_cost_next = true,
            _ => {}
        }
    }
    Ok(costs)
}

/// The name behind a compressed `(id) name` or `(id)` reference, remembering new ones.
fn named(names: &mut HashMap<String, String>, value: &str) -> Result<String> {
    let Some(rest) = value.strip_prefix('(') else {
        return Ok(value.to_string());
    };
    let (id, name) = rest
        .split_once(')')
        .with_context(|| format!("callgrind: bad name reference {value:?}"))?;
    match name.trim() {
        "" => match names.get(id) {
            Some(name) => Ok(name.clone()),
            None => bail!("callgrind: ({id}) is used before it is named"),
        },
        name => {
            names.insert(id.to_string(), name.to_string());
            Ok(name.to_string())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two functions of the gateway and one of libc; `main` calls `parse` (whose inclusive cost,
    /// 900, is not main's own) and `memcpy`.
    const OUTPUT: &str = "\
version: 1
events: Ir
ob=(1) /bin/gateway
fl=(1) src/main.rs
fn=(1) _ZN4main
10 5
+2 7
cob=(2) /lib/libc.so.6
cfn=(2) memcpy
calls=3 0
+1 30
cob=(1)
cfn=(3) _ZN5parse
calls=1 0
* 900
ob=(2)
fn=(2)
0 30
ob=(1)
fn=(3)
5 400
+1 500
fn=(4) _ZN5parse'2
7 2
fn=(1)
20 1
totals: 1845
";

    #[test]
    fn own_instructions_per_function_of_the_binary() {
        let costs = costs(OUTPUT, Path::new("/bin/gateway")).unwrap();
        assert_eq!(costs.len(), 2, "{costs:?}");
        assert_eq!(costs["_ZN4main"], 13);
        assert_eq!(
            costs["_ZN5parse"], 902,
            "a recursive call counts for its function"
        );
    }

    #[test]
    fn functions_of_every_run_come_first_then_each_runs_own() {
        let run = |functions: &[(&str, u64)]| {
            functions
                .iter()
                .map(|(name, cost)| (name.to_string(), *cost))
                .collect::<HashMap<_, _>>()
        };
        let folder = run(&[
            ("common_small", 1),
            ("folder_only", 500),
            ("common_big", 10),
        ]);
        let api_server = run(&[("api_only", 900), ("common_small", 5), ("common_big", 1)]);
        let order = order_file(&[folder, api_server]);
        assert_eq!(
            ordered_functions(&order),
            ["common_big", "common_small", "folder_only", "api_only"]
        );
    }

    #[test]
    fn a_reference_before_its_name_is_an_error() {
        let error = costs("fn=(4)\n1 2\n", Path::new("/bin/gateway"));
        assert!(error.unwrap_err().to_string().contains("(4)"));
    }
}
