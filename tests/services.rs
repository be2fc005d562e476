//! The service harness itself: the shared services that scripts/services.sh exports answer,
//! and each throwaway server starts, answers, stops (and is then unreachable) and starts again
//! on the same port with its data intact.

mod common;

use async_nats::jetstream;
use common::services::{MariaDb, NatsServer, Postgres, free_port, nats_info};
use sqlx::Connection;
use std::net::{Ipv4Addr, TcpListener, TcpStream};

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run the tests through scripts/test.sh"))
}

fn refuses_connections(port: u16) -> bool {
    TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err()
}

/// A name no earlier run left behind on a shared server.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{prefix}_{}_{nanos}", std::process::id())
}

#[test]
fn free_ports_are_distinct_and_bindable() {
    // Each port is bound the moment it is handed out, and held: the property under test is
    // that free_port gives a port nothing holds, never the same one twice, and outside the
    // range outgoing connections use.
    let mut held = Vec::new();
    for _ in 0..20 {
        let port = free_port();
        match TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            Ok(listener) => held.push((port, listener)),
            Err(error) => {
                let holders = std::process::Command::new("ss")
                    .args(["-tanp", &format!("sport = :{port}")])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                    .unwrap_or_default();
                panic!("port {port} cannot be bound: {error}; held by:\n{holders}");
            }
        }
    }
    let ports: Vec<u16> = held.iter().map(|(port, _)| *port).collect();
    let mut distinct = ports.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ports.len(), "{ports:?}");
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .expect("read the ephemeral port range")
        .split_whitespace()
        .next()
        .and_then(|low| low.parse().ok())
        .expect("the range's low end");
    assert!(
        ports.iter().all(|&port| port < ephemeral_low),
        "{ports:?} vs {ephemeral_low}"
    );
}

#[tokio::test]
async fn the_shared_services_answer() {
    needs!(Nats, Postgres, Mysql);
    // NATS: current enough to create a KV bucket (async-nats cannot on 2.9).
    let client = async_nats::connect(env("LOGMESH_TEST_NATS_URL"))
        .await
        .expect("connect to the shared NATS");
    let version = client.server_info().version;
    let js = jetstream::new(client);
    let bucket = unique("shared");
    let kv = js
        .create_key_value(jetstream::kv::Config {
            bucket: bucket.clone(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("create a KV bucket on nats-server {version}: {e}"));
    kv.put("key", "value".into()).await.expect("put");
    assert_eq!(kv.get("key").await.expect("get"), Some("value".into()));
    js.delete_key_value(&bucket)
        .await
        .expect("delete the bucket");

    let mut pg = sqlx::PgConnection::connect(&env("LOGMESH_TEST_POSTGRES_URL"))
        .await
        .expect("connect to the shared PostgreSQL");
    let superuser: bool =
        sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            .fetch_one(&mut pg)
            .await
            .expect("query PostgreSQL");
    assert!(superuser, "LOGMESH_TEST_POSTGRES_URL is an admin URL");
    pg.close().await.expect("close");

    let mut mysql = sqlx::MySqlConnection::connect(&env("LOGMESH_TEST_MYSQL_URL"))
        .await
        .expect("connect to the shared MariaDB");
    let user: String = sqlx::query_scalar("SELECT CAST(CURRENT_USER() AS CHAR)")
        .fetch_one(&mut mysql)
        .await
        .expect("query MariaDB");
    assert!(user.starts_with("root@"), "{user}");
    mysql.close().await.expect("close");
}

#[tokio::test]
async fn nats_server_stops_and_starts_again_with_its_jetstream_data() {
    needs!(NatsServer);
    let mut nats = NatsServer::start();
    let first = nats_info(nats.port()).expect("INFO");
    assert!(first.contains("\"jetstream\":true"), "{first}");

    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: "SURVIVORS".into(),
        subjects: vec!["survivors.>".into()],
        storage: jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .expect("create a stream");
    js.publish("survivors.one", "before the restart".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let kv = js
        .create_key_value(jetstream::kv::Config {
            bucket: "survivors".into(),
            ..Default::default()
        })
        .await
        .expect("create a KV bucket");
    kv.put("key", "kept".into()).await.expect("put");
    drop((kv, js, client));

    nats.stop();
    assert!(!nats.is_running());
    assert!(refuses_connections(nats.port()), "stopped, yet it accepts");
    assert!(nats_info(nats.port()).is_err());

    nats.start_again();
    let again = nats_info(nats.port()).expect("INFO after the restart");
    let server_id = |info: &str| {
        let json: serde_json::Value =
            serde_json::from_str(info.trim_start_matches("INFO ")).expect("INFO is JSON");
        json["server_id"].as_str().expect("server_id").to_owned()
    };
    assert_ne!(server_id(&first), server_id(&again), "a new process");

    let client = async_nats::connect(nats.url())
        .await
        .expect("connect again");
    let js = jetstream::new(client);
    let stream = js
        .get_stream("SURVIVORS")
        .await
        .expect("the stream survived");
    let message = stream.get_raw_message(1).await.expect("message 1 survived");
    assert_eq!(message.payload, "before the restart");
    let kv = js
        .get_key_value("survivors")
        .await
        .expect("the bucket survived");
    assert_eq!(kv.get("key").await.expect("get"), Some("kept".into()));
}

#[tokio::test]
async fn postgres_stops_and_starts_again_with_its_data() {
    needs!(PostgresServer);
    let mut pg = Postgres::start().await;
    let mut connection = sqlx::PgConnection::connect(&pg.url())
        .await
        .expect("connect");
    sqlx::query("CREATE TABLE survivors (id int PRIMARY KEY, name text NOT NULL)")
        .execute(&mut connection)
        .await
        .expect("create a table");
    sqlx::query("INSERT INTO survivors VALUES (1, 'before the restart')")
        .execute(&mut connection)
        .await
        .expect("insert");
    connection.close().await.expect("close");

    pg.stop();
    assert!(!pg.is_running());
    assert!(refuses_connections(pg.port()), "stopped, yet it accepts");
    assert!(sqlx::PgConnection::connect(&pg.url()).await.is_err());

    pg.start_again().await;
    let mut connection = sqlx::PgConnection::connect(&pg.url())
        .await
        .expect("connect again");
    let name: String = sqlx::query_scalar("SELECT name FROM survivors WHERE id = 1")
        .fetch_one(&mut connection)
        .await
        .expect("the row survived");
    assert_eq!(name, "before the restart");
    connection.close().await.expect("close");
}

#[tokio::test]
async fn mariadb_stops_and_starts_again_with_its_data() {
    needs!(MariadbServer);
    let mut db = MariaDb::start().await;
    let mut connection = sqlx::MySqlConnection::connect(&db.url())
        .await
        .expect("connect");
    for statement in [
        "CREATE DATABASE services",
        "CREATE TABLE services.survivors (id INT PRIMARY KEY, name TEXT NOT NULL) ENGINE=InnoDB",
        "INSERT INTO services.survivors VALUES (1, 'before the restart')",
    ] {
        sqlx::query(statement)
            .execute(&mut connection)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
    connection.close().await.expect("close");

    db.stop();
    assert!(!db.is_running());
    assert!(refuses_connections(db.port()), "stopped, yet it accepts");
    assert!(sqlx::MySqlConnection::connect(&db.url()).await.is_err());

    db.start_again().await;
    let mut connection = sqlx::MySqlConnection::connect(&db.url())
        .await
        .expect("connect again");
    let name: String = sqlx::query_scalar("SELECT name FROM services.survivors WHERE id = 1")
        .fetch_one(&mut connection)
        .await
        .expect("the row survived");
    assert_eq!(name, "before the restart");
    connection.close().await.expect("close");
}
