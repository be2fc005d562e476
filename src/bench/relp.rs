//! `logmesh bench relp`: RELP senders against a node's `relp://` listener, each as rsyslog's
//! omrelp sends: `open`, then `syslog` frames keeping up to `--window` unanswered, then
//! `close`. Reports messages answered per second and the latency from a frame's send to its
//! `rsp 200` (the node answers once the message is durable).

use crate::syslog::relp::{Command, FrameReader};
use crate::units::parse_duration;
use bytes::BytesMut;
use clap::Args;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Debug, Clone, Args)]
pub struct RelpBenchArgs {
    /// The node's RELP listener (`--syslog-listen relp://IP:PORT`).
    #[arg(long, default_value = "127.0.0.1:2514")]
    pub addr: SocketAddr,
    /// Unanswered frames each connection keeps in flight (librelp's default is 128).
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub window: u32,
    /// Concurrent connections.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,
    /// How long to send for, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Approximate size of one syslog message, in bytes.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(64..=65_536))]
    pub message_bytes: u32,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
pub struct RelpReport {
    pub connections: u32,
    pub window: u32,
    pub seconds: f64,
    pub messages_answered: u64,
    pub messages_per_second: f64,
    pub ack_latency_ms_p50: f64,
    pub ack_latency_ms_p99: f64,
    pub ack_latency_ms_max: f64,
}

pub async fn run(args: RelpBenchArgs) -> ExitCode {
    match measure(&args).await {
        Ok(report) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("serialises")
                );
            } else {
                println!(
                    "{} connection(s), window {}, {:.1} s: {} messages answered, {:.0}/s; \
                     ack latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                    report.connections,
                    report.window,
                    report.seconds,
                    report.messages_answered,
                    report.messages_per_second,
                    report.ack_latency_ms_p50,
                    report.ack_latency_ms_p99,
                    report.ack_latency_ms_max
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("logmesh bench relp: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn measure(args: &RelpBenchArgs) -> Result<RelpReport, String> {
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut senders = tokio::task::JoinSet::new();
    for connection in 0..args.connections {
        let args = args.clone();
        senders.spawn(async move { send(&args, connection, deadline).await });
    }
    let mut latencies = Histogram::<u64>::new(3).expect("a histogram");
    while let Some(sent) = senders.join_next().await {
        let sent = sent.map_err(|e| e.to_string())??;
        latencies.add(sent).map_err(|e| e.to_string())?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let answered = latencies.len();
    if answered == 0 {
        return Err("no message was answered".into());
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(RelpReport {
        connections: args.connections,
        window: args.window,
        seconds,
        messages_answered: answered,
        messages_per_second: answered as f64 / seconds,
        ack_latency_ms_p50: ms(latencies.value_at_quantile(0.5)),
        ack_latency_ms_p99: ms(latencies.value_at_quantile(0.99)),
        ack_latency_ms_max: ms(latencies.max()),
    })
}

/// One connection's session; the latencies (µs) of its answered messages.
async fn send(
    args: &RelpBenchArgs,
    connection: u32,
    deadline: Instant,
) -> Result<Histogram<u64>, String> {
    let mut stream = TcpStream::connect(args.addr)
        .await
        .map_err(|e| format!("{}: {e}", args.addr))?;
    let _ = stream.set_nodelay(true);
    let mut latencies = Histogram::<u64>::new(3).expect("a histogram");
    let mut buffer = BytesMut::with_capacity(64 * 1024);
    let mut reader = FrameReader::default();
    let offers = "relp_version=0\nrelp_software=logmesh-bench\ncommands=syslog";
    let mut out = format!("1 open {} {offers}\n", offers.len());
    stream
        .write_all(out.as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let opened = next_answer(&mut stream, &mut buffer, &mut reader).await?;
    if !opened.1.starts_with("200") {
        return Err(format!("open refused: {}", opened.1));
    }
    let filler = "x".repeat(args.message_bytes.saturating_sub(60) as usize);
    let mut txnr = 1u32;
    let mut in_flight: VecDeque<(u32, Instant)> = VecDeque::new();
    let mut sequence = 0u64;
    loop {
        let sending = Instant::now() < deadline;
        out.clear();
        while sending && in_flight.len() < args.window as usize {
            txnr = if txnr >= 999_999_999 { 1 } else { txnr + 1 };
            sequence += 1;
            let message = format!(
                "<14>1 2026-11-23T10:15:00Z bench relp - - - c{connection} m{sequence} {filler}"
            );
            let _ = writeln!(out, "{txnr} syslog {} {message}", message.len());
            in_flight.push_back((txnr, Instant::now()));
        }
        if !out.is_empty() {
            stream
                .write_all(out.as_bytes())
                .await
                .map_err(|e| e.to_string())?;
        }
        if in_flight.is_empty() {
            break;
        }
        // At least one answer, then every one already here.
        let mut first = true;
        loop {
            let answer = if first {
                first = false;
                Some(next_answer(&mut stream, &mut buffer, &mut reader).await?)
            } else {
                reader.next(&mut buffer)?.map(|frame| {
                    (
                        frame.txnr,
                        String::from_utf8_lossy(&frame.data).into_owned(),
                    )
                })
            };
            let Some((answered, text)) = answer else {
                break;
            };
            if !text.starts_with("200") {
                return Err(format!("message {answered} answered {text:?}"));
            }
            let position = in_flight
                .iter()
                .position(|(txnr, _)| *txnr == answered)
                .ok_or_else(|| format!("an answer to {answered}, which was not sent"))?;
            let (_, sent) = in_flight.remove(position).expect("found");
            latencies
                .record(sent.elapsed().as_micros() as u64)
                .map_err(|e| e.to_string())?;
        }
    }
    txnr += 1;
    stream
        .write_all(format!("{txnr} close 0\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    Ok(latencies)
}

/// Reads until the next `rsp` frame: its transaction number and text.
async fn next_answer(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    reader: &mut FrameReader,
) -> Result<(u32, String), String> {
    loop {
        if let Some(frame) = reader.next(buffer)? {
            if frame.command != Command::Other("rsp".into()) {
                return Err(format!("the node sent {:?}", frame.command));
            }
            return Ok((
                frame.txnr,
                String::from_utf8_lossy(&frame.data).into_owned(),
            ));
        }
        if stream.read_buf(buffer).await.map_err(|e| e.to_string())? == 0 {
            return Err("the node closed the connection".into());
        }
    }
}
