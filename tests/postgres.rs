//! `dynamic = "database/creds/ROLE"` against a real PostgreSQL (Debian's
//! package, a throwaway cluster the test starts on a loopback port as an
//! unprivileged uid) and OpenBao's built-in postgres database plugin: the
//! workload logs in with the credentials it was issued, and when its lease
//! ends (sidecar exit, expiry, a withdrawn grant) the role is revoked in
//! Vault, gone from `pg_roles`, and its open sessions are terminated by the
//! revocation statements the README documents.
mod util;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use util::bao::{free_port, vault_broker, Dev, ROOT_TOKEN};
use util::tools::tool;
use util::*;

/// The uid the cluster runs as: PostgreSQL refuses root.
const PG_UID: &str = "65534";
const PG_BIN: &[&str] = &["/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin"];
const SUPERUSER_PW: &str = "pg-super-7f3a";

/// The statements README.md documents, word for word.
const REVOKE: &str = r#"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{{name}}'; REVOKE ALL ON ALL TABLES IN SCHEMA public FROM "{{name}}"; DROP ROLE IF EXISTS "{{name}}";"#;
const CREATE: &str = r#"CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}'; GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";"#;

struct Postgres {
    dir: tempfile::TempDir,
    port: u16,
}

impl Postgres {
    fn start() -> Postgres {
        let dir = tempfile::Builder::new()
            .prefix("unbaked-pg")
            .tempdir_in("/tmp")
            .unwrap();
        let pg = dir.path().join("pg");
        std::fs::create_dir(&pg).unwrap();
        std::fs::write(pg.join("pw"), SUPERUSER_PW).unwrap();
        let chown = output(
            Command::new("chown")
                .args(["-R", &format!("{PG_UID}:{PG_UID}")])
                .arg(&pg),
        );
        assert!(chown.status.success(), "{}", text(&chown.stderr));
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let port = free_port();
        let initdb = output(as_pg(&tool("initdb", PG_BIN)).args([
            "-D",
            &path(&pg.join("data")),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            &format!("--pwfile={}", path(&pg.join("pw"))),
            "-E",
            "UTF8",
        ]));
        assert!(initdb.status.success(), "initdb: {}", text(&initdb.stderr));
        let start = output(as_pg(&tool("pg_ctl", PG_BIN)).args([
            "-D",
            &path(&pg.join("data")),
            "-l",
            &path(&pg.join("log")),
            "-w",
            "-t",
            "60",
            "-o",
            &format!("-p {port} -k {} -c listen_addresses=127.0.0.1", path(&pg)),
            "start",
        ]));
        let p = Postgres { dir, port };
        assert!(
            start.status.success(),
            "pg_ctl start: {}{}",
            text(&start.stderr),
            std::fs::read_to_string(pg.join("log")).unwrap_or_default()
        );
        p
    }

    fn pg(&self) -> PathBuf {
        self.dir.path().join("pg")
    }

    /// SQL as the superuser over the unix socket: rows, `|`-separated.
    fn sql(&self, query: &str) -> String {
        let out = output(
            Command::new(tool("psql", PG_BIN))
                .args(["-X", "-A", "-t", "-h"])
                .arg(self.pg())
                .args([
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-c",
                    query,
                ]),
        );
        assert!(out.status.success(), "psql {query}: {}", text(&out.stderr));
        text(&out.stdout).trim().to_string()
    }

    fn role_exists(&self, name: &str) -> bool {
        self.sql(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{name}'"
        )) == "1"
    }

    fn sessions_of(&self, name: &str) -> usize {
        self.sql(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = '{name}'"
        ))
        .parse()
        .unwrap()
    }

    /// `psql` over TCP with a password, as a workload would connect.
    fn login(&self, user: &str, password: &str) -> Command {
        let mut c = Command::new(tool("psql", PG_BIN));
        c.args([
            "-X",
            "-A",
            "-t",
            "-h",
            "127.0.0.1",
            "-p",
            &self.port.to_string(),
            "-U",
            user,
            "-d",
            "postgres",
        ])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "5");
        c
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = output(as_pg(&tool("pg_ctl", PG_BIN)).args([
            "-D",
            &path(&self.pg().join("data")),
            "-m",
            "immediate",
            "stop",
        ]));
    }
}

fn as_pg(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid", PG_UID, "--regid", PG_UID, "--clear-groups", "--"])
        .arg(program)
        .env("LC_ALL", "C")
        .current_dir("/");
    c
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn spawn_sidecar(b: &Broker, workload: &str, dir: &Path) -> Child {
    b.cmd()
        .args(["sidecar", "--workload", workload, "--dir"])
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(b.dir.path().join(format!("sidecar-{workload}.log"))).unwrap(),
        )
        .spawn()
        .unwrap()
}

fn sigterm(child: &mut Child) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    child.wait().unwrap();
}

fn gone(pg: &Postgres, b: &Broker, user: &str, why: &str) {
    assert!(
        wait_for(Duration::from_secs(20), || !pg.role_exists(user)),
        "{why}: role {user} still in pg_roles\nbroker log:\n{}",
        b.log_text()
    );
    assert_eq!(
        pg.sessions_of(user),
        0,
        "{why}: a session of {user} survived"
    );
}

#[test]
fn database_credentials_are_issued_per_lease_and_revoked_in_postgres_when_it_ends() {
    let pg = Postgres::start();
    let dev = Dev::start();
    dev.must(&["secrets", "enable", "database"]);
    dev.must(&[
        "write",
        "database/config/pg",
        "plugin_name=postgresql-database-plugin",
        &format!(
            "connection_url=postgresql://{{{{username}}}}:{{{{password}}}}@127.0.0.1:{}/postgres?sslmode=disable",
            pg.port
        ),
        "username=postgres",
        &format!("password={SUPERUSER_PW}"),
        "allowed_roles=app",
    ]);
    dev.must(&[
        "write",
        "database/roles/app",
        "db_name=pg",
        &format!("creation_statements={CREATE}"),
        &format!("revocation_statements={REVOKE}"),
        "default_ttl=1h",
        "max_ttl=24h",
    ]);
    let grant = |ttl: &str, rest: &str| {
        format!("[[grant]]\ndynamic = \"database/creds/app\"\nttl = \"{ttl}\"\n{rest}")
    };
    let web = host_policy("web", &grant("5m", "file = \"db\"\n"));
    let batch = host_policy(
        "batch",
        &grant("3s", "field = \"username\"\nenv = \"DB_USER\"\n"),
    );
    let renew = host_policy("renew", &grant("3s", "file = \"db\"\n"));
    let env = [
        ("VAULT_ADDR", dev.server.addr.as_str()),
        ("VAULT_TOKEN", ROOT_TOKEN),
    ];
    let b = vault_broker(
        &[
            ("web.toml", &web),
            ("batch.toml", &batch),
            ("renew.toml", &renew),
        ],
        "",
        &env,
    );

    // 1. A sidecar's lease: the workload logs in with what it was issued,
    //    and keeps a session open.
    let secrets = shm_dir("pg-web");
    let mut sidecar = spawn_sidecar(&b, "web", secrets.path());
    let user_file = secrets.path().join("db/username");
    assert!(
        wait_for(Duration::from_secs(15), || user_file.exists()),
        "{}",
        b.log_text()
    );
    let user = std::fs::read_to_string(&user_file).unwrap();
    let password = std::fs::read_to_string(secrets.path().join("db/password")).unwrap();
    assert!(pg.role_exists(&user), "{user} not created");
    let who = output(
        pg.login(&user, &password)
            .args(["-c", "SELECT current_user"]),
    );
    assert_eq!(text(&who.stdout).trim(), user, "{}", text(&who.stderr));
    let session = pg
        .login(&user, &password)
        .args(["-c", "SELECT pg_sleep(600)"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        wait_for(Duration::from_secs(10), || pg.sessions_of(&user) == 1),
        "the workload's session did not open"
    );
    // Control: a wrong password does not log in.
    let wrong = output(pg.login(&user, "not-the-password").args(["-c", "SELECT 1"]));
    assert!(!wrong.status.success());

    // The sidecar exits: the lease ends, the role and its session go.
    sigterm(&mut sidecar);
    gone(&pg, &b, &user, "sidecar exit");
    let ended = session.wait_with_output().unwrap();
    assert!(
        !ended.status.success(),
        "the open session was not terminated"
    );
    let again = output(pg.login(&user, &password).args(["-c", "SELECT 1"]));
    assert!(
        !again.status.success(),
        "the revoked credentials still log in"
    );

    // 2. Expiry: `unbaked exec` does not renew; its 3 s lease runs out.
    let out = output(b.cmd().args([
        "exec",
        "--workload",
        "batch",
        "--",
        "sh",
        "-c",
        "printf %s \"$DB_USER\"",
    ]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let user = text(&out.stdout);
    assert!(pg.role_exists(&user), "{user} not created");
    gone(&pg, &b, &user, "lease expiry");

    // 3. A withdrawn grant: the next renewal is denied and the lease revoked.
    let secrets = shm_dir("pg-renew");
    let mut sidecar = spawn_sidecar(&b, "renew", secrets.path());
    let user_file = secrets.path().join("db/username");
    assert!(
        wait_for(Duration::from_secs(15), || user_file.exists()),
        "{}",
        b.log_text()
    );
    let user = std::fs::read_to_string(&user_file).unwrap();
    assert!(pg.role_exists(&user));
    b.write_policy("renew.toml", &host_policy("renew", ""));
    gone(&pg, &b, &user, "withdrawn grant");
    assert!(
        wait_for(Duration::from_secs(10), || !user_file.exists()),
        "the sidecar kept the revoked credentials on disk"
    );
    sigterm(&mut sidecar);
    assert!(
        b.audit_text().contains("database/creds/app"),
        "{}",
        b.audit_text()
    );
}
