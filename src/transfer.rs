//! `unbaked secret export` and `import`: secrets moved between brokers
//! (memory, file or Vault KV v2) through the admin API, as a sealed export
//! on stdout and stdin. The values are sealed inside this process, under a
//! key file the operator names (the format of `unbaked store init-key`):
//! never on a command line, never in a file in clear. An export is a
//! store log (`broker/src/store/file.rs`) ending with a count, so a
//! truncated one is refused whole.

use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use unbaked_api::exit;
use unbaked_api::wire::PutSecret;
use unbaked_broker::store::file::{open_export, seal_export, Exported};
use unbaked_broker::store::key;
use unbaked_sidecar::client::{Client, ClientError};

use crate::Failure;

fn api(e: ClientError) -> Failure {
    Failure::new(e.exit_code(), e)
}

pub fn export(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    prefix: &str,
    key_file: &Path,
) -> Result<(), Failure> {
    let key = key::load(key_file, "--key-file").map_err(|e| Failure::new(exit::FAILURE, e))?;
    let mut stdout = std::io::stdout().lock();
    if stdout.is_terminal() {
        return Err(Failure::msg(
            exit::USAGE,
            "the export is binary: redirect it to a file (it is sealed) or pipe it to `unbaked secret import`",
        ));
    }
    let paths = rt.block_on(client.list_secrets(prefix)).map_err(api)?.paths;
    let mut versions = Vec::with_capacity(paths.len());
    for path in paths {
        let d = rt.block_on(client.get_secret(&path)).map_err(api)?;
        versions.push(Exported {
            path: d.path,
            version: d.version,
            data: d.data,
        });
    }
    let sealed = seal_export(&key, &versions).map_err(|e| Failure::new(exit::FAILURE, e))?;
    stdout
        .write_all(&sealed)
        .and_then(|()| stdout.flush())
        .map_err(|e| Failure::new(exit::FAILURE, e))?;
    eprintln!(
        "exported {} secret(s) under {prefix:?}, sealed with {}",
        versions.len(),
        key_file.display()
    );
    Ok(())
}

pub fn import(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    key_file: &Path,
) -> Result<(), Failure> {
    let key = key::load(key_file, "--key-file").map_err(|e| Failure::new(exit::FAILURE, e))?;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::new(exit::FAILURE, e))?;
    // Opened whole before the first write: a wrong key or a cut export
    // imports nothing.
    let versions = open_export(&key, &bytes, Path::new("the export on stdin"), "--key-file")
        .map_err(|e| Failure::new(exit::FAILURE, e))?;
    let mut out = std::io::stdout().lock();
    for v in &versions {
        let meta = rt
            .block_on(client.put_secret(
                &v.path,
                &PutSecret {
                    data: v.data.clone(),
                },
            ))
            .map_err(api)?;
        let _ = writeln!(
            out,
            "{}: version {} (from version {})",
            meta.path, meta.version, v.version
        );
    }
    Ok(())
}
