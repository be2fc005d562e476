//! Request bodies: the pace they must keep ([`MinRateBody`]), how they are read within the size
//! limit and the node's body memory budget ([`read_body`], [`read_small_body`]), and their
//! `Content-Encoding`.
//!
//! Invariants:
//! - A body must arrive within `read_timeout` plus one second per `min_rate` bytes received
//!   (Apache's `mod_reqtimeout` rule): a client trickling a byte every few seconds is answered
//!   408 and costs the node nothing after that.
//! - Body memory is reserved from the budget as bytes arrive (and as a compressed body
//!   inflates: gzip, deflate, snappy),
//!   never for what a `Content-Length` merely declares, so a slow or lying client holds only
//!   what it sent. Past the budget the answer is 503 + `Retry-After`.
//! - Every failure to read a body is a JSON error naming the limit: 408 too slow, 413 too
//!   large, 415 unknown encoding, 400 malformed.

use super::error::ApiError;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, StatusCode, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes per second a body must keep up after [`DEFAULT_BODY_READ_TIMEOUT`].
pub const DEFAULT_BODY_MIN_RATE: u64 = 8 * 1024;

/// The pace every request body must keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyPace {
    pub read_timeout: Duration,
    /// Bytes per second.
    pub min_rate: u64,
}

impl Default for BodyPace {
    fn default() -> Self {
        BodyPace {
            read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            min_rate: DEFAULT_BODY_MIN_RATE,
        }
    }
}

/// Why a body was cut: it fell behind [`BodyPace`].
#[derive(Debug, thiserror::Error)]
#[error(
    "the request body arrived too slowly: {received} bytes in {elapsed_ms} ms; a body must \
     arrive within --body-read-timeout ({timeout}) plus one second per --body-min-rate \
     ({min_rate} bytes) received"
)]
pub struct BodyTooSlow {
    received: u64,
    elapsed_ms: u128,
    timeout: String,
    min_rate: u64,
}

/// A request body that fails with [`BodyTooSlow`] when it falls behind its pace.
pub struct MinRateBody {
    inner: Body,
    pace: BodyPace,
    started: Instant,
    received: u64,
    /// Armed only while the body waits for data.
    timer: Option<Pin<Box<Sleep>>>,
}

impl MinRateBody {
    pub fn new(inner: Body, pace: BodyPace) -> MinRateBody {
        MinRateBody {
            inner,
            pace,
            started: Instant::now(),
            received: 0,
            timer: None,
        }
    }

    fn deadline(&self) -> Instant {
        let earned = Duration::from_secs_f64(self.received as f64 / self.pace.min_rate as f64);
        self.started + self.pace.read_timeout + earned
    }
}

impl HttpBody for MinRateBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    let deadline = this.deadline();
                    if let Some(timer) = this.timer.as_mut() {
                        timer.as_mut().reset(deadline);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                let deadline = this.deadline();
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    let error = BodyTooSlow {
                        received: this.received,
                        elapsed_ms: this.started.elapsed().as_millis(),
                        timeout: humantime::format_duration(this.pace.read_timeout).to_string(),
                        min_rate: this.pace.min_rate,
                    };
                    return Poll::Ready(Some(Err(axum::Error::new(error))));
                }
                Poll::Pending
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The error a body read failure becomes.
pub fn body_error(error: &axum::Error, limit: usize) -> ApiError {
    if let Some(slow) = find_source::<BodyTooSlow>(error) {
        return ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_too_slow",
            slow.to_string(),
        );
    }
    if find_source::<http_body_util::LengthLimitError>(error).is_some() {
        return too_large(limit);
    }
    ApiError::bad_request(format!("could not read the request body: {error}"))
}

fn find_source<'a, T: std::error::Error + 'static>(
    error: &'a (dyn std::error::Error + 'static),
) -> Option<&'a T> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = source {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        source = error.source();
    }
    None
}

fn too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!(
        "the body is larger than the {limit}-byte limit (--max-body-bytes); split it into \
         several requests"
    ))
}

/// Reads a small body (a counter increment, a job submission) whole, up to `limit` bytes,
/// with every failure a JSON error.
pub async fn read_small_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => {
            let error = axum::Error::new(error);
            Err(match body_error(&error, limit) {
                ApiError {
                    code: "payload_too_large",
                    ..
                } => ApiError::too_large(format!(
                    "the body is larger than this endpoint's {limit}-byte limit"
                )),
                other => other,
            })
        }
    }
}

/// How a request body is encoded (`Content-Encoding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Identity,
    Gzip,
    /// HTTP's `deflate`: zlib-wrapped (RFC 1950), as Elasticsearch clients and the OpenTelemetry
    /// Collector send it.
    Deflate,
    /// A snappy block, as the OpenTelemetry Collector and Vector send `Content-Encoding:
    /// snappy`; or, when the body starts with the framing format's stream identifier, snappy
    /// frames (which Collectors have sent under the same name).
    Snappy,
    /// Snappy's framing format, `Content-Encoding: x-snappy-framed`.
    SnappyFramed,
}

/// The first chunk of every stream in snappy's framing format.
const SNAPPY_STREAM_IDENTIFIER: &[u8] = b"\xff\x06\x00\x00sNaPpY";

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Identity => "identity",
            Encoding::Gzip => "gzip",
            Encoding::Deflate => "deflate",
            Encoding::Snappy => "snappy",
            Encoding::SnappyFramed => "x-snappy-framed",
        }
    }
}

pub fn encoding_of(headers: &HeaderMap) -> Result<Encoding, ApiError> {
    let Some(value) = headers.get(header::CONTENT_ENCODING) else {
        return Ok(Encoding::Identity);
    };
    match value.as_bytes().to_ascii_lowercase().as_slice() {
        b"identity" => Ok(Encoding::Identity),
        b"gzip" | b"x-gzip" => Ok(Encoding::Gzip),
        b"deflate" => Ok(Encoding::Deflate),
        b"snappy" => Ok(Encoding::Snappy),
        b"x-snappy-framed" => Ok(Encoding::SnappyFramed),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!(
                "Content-Encoding {:?} is not supported; send the body as gzip, deflate, snappy \
                 or uncompressed",
                String::from_utf8_lossy(value.as_bytes())
            ),
        )),
    }
}

/// Body memory held from the node's budget; released when dropped.
pub struct Reservation {
    budget: Arc<Semaphore>,
    permit: Option<OwnedSemaphorePermit>,
}

impl Reservation {
    fn new(budget: Arc<Semaphore>) -> Reservation {
        Reservation {
            budget,
            permit: None,
        }
    }

    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.permit
            .as_ref()
            .map_or(0, OwnedSemaphorePermit::num_permits)
    }

    /// Holds `total` bytes in all (never less than already held), or answers 503 when the
    /// budget has no room.
    fn hold(&mut self, total: usize) -> Result<(), ApiError> {
        let more = total.saturating_sub(self.bytes());
        if more == 0 {
            return Ok(());
        }
        let more = u32::try_from(more).map_err(|_| overloaded())?;
        let permit = self
            .budget
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| overloaded())?;
        match &mut self.permit {
            Some(held) => held.merge(permit),
            None => self.permit = Some(permit),
        }
        Ok(())
    }
}

fn overloaded() -> ApiError {
    ApiError::overloaded(
        "the request bodies being received fill this node's body memory budget; retry later",
    )
}

/// Reads the whole body within `limit` bytes and the node's body budget; a gzip body is
/// decompressed (on the blocking pool) within the same limit and budget, so a small bomb cannot
/// grow past it. The reservation covers the bytes returned until it is dropped.
pub async fn read_body(
    budget: &Arc<Semaphore>,
    limit: usize,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, Reservation), ApiError> {
    read_encoded_body(budget, limit, headers, body)
        .await?
        .decode()
        .await
}

/// A body as received, its `Content-Encoding` not yet undone: what a request refused before
/// parsing needs to have read, so that its connection stays usable.
pub struct EncodedBody {
    bytes: Vec<u8>,
    encoding: Encoding,
    limit: usize,
    reservation: Reservation,
}

/// The first half of [`read_body`]: the whole body within `limit` bytes and the node's body
/// budget, as received.
pub async fn read_encoded_body(
    budget: &Arc<Semaphore>,
    limit: usize,
    headers: &HeaderMap,
    body: Body,
) -> Result<EncodedBody, ApiError> {
    let encoding = encoding_of(headers)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(too_large(limit));
    }
    let mut reservation = Reservation::new(budget.clone());
    let mut body = body;
    let mut bytes: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| body_error(&error, limit))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if bytes.len() + data.len() > limit {
            return Err(too_large(limit));
        }
        if bytes.capacity() < bytes.len() + data.len() {
            // Grow as Vec would, but never past the limit, and hold what is allocated.
            let wanted = (bytes.len() + data.len())
                .max(bytes.capacity().saturating_mul(2))
                .min(limit);
            reservation.hold(wanted)?;
            bytes.reserve_exact(wanted - bytes.len());
        }
        bytes.extend_from_slice(&data);
    }
    Ok(EncodedBody {
        bytes,
        encoding,
        limit,
        reservation,
    })
}

impl EncodedBody {
    /// The second half of [`read_body`]: the body decompressed within its limit and budget.
    pub async fn decode(self) -> Result<(Bytes, Reservation), ApiError> {
        let EncodedBody {
            bytes,
            encoding,
            limit,
            mut reservation,
        } = self;
        match encoding {
            Encoding::Identity => Ok((Bytes::from(bytes), reservation)),
            Encoding::Snappy if !bytes.starts_with(SNAPPY_STREAM_IDENTIFIER) => {
                let inflated = decode_snappy_block(&bytes, limit, &mut reservation)
                    .map_err(|e| e.with_encoding(encoding))?;
                Ok((inflated, reservation))
            }
            _ => tokio::task::spawn_blocking(move || {
                let inflated = match encoding {
                    Encoding::Gzip => inflate(
                        flate2::read::MultiGzDecoder::new(&bytes[..]),
                        limit,
                        &mut reservation,
                    ),
                    Encoding::Deflate => inflate(
                        flate2::read::ZlibDecoder::new(&bytes[..]),
                        limit,
                        &mut reservation,
                    ),
                    _ => inflate(
                        snap::read::FrameDecoder::new(&bytes[..]),
                        limit,
                        &mut reservation,
                    ),
                }
                .map_err(|e| e.with_encoding(encoding))?;
                drop(bytes);
                Ok((inflated, reservation))
            })
            .await
            .map_err(|error| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("decompressing the body failed: {error}"),
                )
            })?,
        }
    }
}

/// Why a compressed body could not be decompressed.
enum Inflate {
    /// It is not what its encoding says (the decoder's words).
    Malformed(String),
    /// Past the limit or the budget.
    Refused(ApiError),
}

impl Inflate {
    fn with_encoding(self, encoding: Encoding) -> ApiError {
        match self {
            Inflate::Malformed(why) => {
                ApiError::bad_request(format!("the body is not valid {}: {why}", encoding.name()))
            }
            Inflate::Refused(error) => error,
        }
    }
}

impl From<ApiError> for Inflate {
    fn from(error: ApiError) -> Self {
        Inflate::Refused(error)
    }
}

/// Decompresses a body (for gzip, several members are one stream, as `cat a.gz b.gz` makes),
/// reading at most `limit` bytes of output and holding budget for the output as it grows.
fn inflate(
    mut decoder: impl std::io::Read,
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Bytes, Inflate> {
    const STEP: usize = 64 * 1024;
    let held_for_input = reservation.bytes();
    let mut out: Vec<u8> = Vec::new();
    loop {
        if out.len() == out.capacity() {
            let wanted = out.capacity().saturating_mul(2).max(STEP).min(limit + 1);
            if wanted <= out.len() {
                return Err(inflated_too_large(limit).into());
            }
            reservation.hold(held_for_input + wanted)?;
            out.reserve_exact(wanted - out.len());
        }
        let start = out.len();
        let room = out.capacity() - start;
        out.resize(start + room, 0);
        let read = decoder
            .read(&mut out[start..])
            .map_err(|e| Inflate::Malformed(e.to_string()))?;
        out.truncate(start + read);
        if out.len() > limit {
            return Err(inflated_too_large(limit).into());
        }
        if read == 0 {
            return Ok(Bytes::from(out));
        }
    }
}

/// Decompresses a snappy block (the raw format, not the framed one): the format Loki's and
/// Prometheus remote write's protobuf bodies use, and `Content-Encoding: snappy`. The block
/// states its decompressed length first, so the limit and budget are checked before anything
/// is allocated.
fn decode_snappy_block(
    compressed: &[u8],
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Bytes, Inflate> {
    let length =
        snap::raw::decompress_len(compressed).map_err(|e| Inflate::Malformed(e.to_string()))?;
    if length > limit {
        return Err(inflated_too_large(limit).into());
    }
    reservation.hold(reservation.bytes() + length)?;
    let mut out = vec![0; length];
    let written = snap::raw::Decoder::new()
        .decompress(compressed, &mut out)
        .map_err(|e| Inflate::Malformed(e.to_string()))?;
    out.truncate(written);
    Ok(Bytes::from(out))
}

/// A snappy block body ([`decode_snappy_block`]) within `limit` and the reservation's budget.
pub fn snappy_block(
    compressed: &[u8],
    limit: usize,
    reservation: &mut Reservation,
) -> Result<Bytes, ApiError> {
    decode_snappy_block(compressed, limit, reservation)
        .map_err(|e| e.with_encoding(Encoding::Snappy))
}

fn inflated_too_large(limit: usize) -> ApiError {
    ApiError::too_large(format!(
        "the body decompresses to more than the {limit}-byte limit (--max-body-bytes); split \
         it into several requests"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[tokio::test]
    async fn a_body_holds_budget_for_what_arrived_not_for_what_it_declared() {
        let budget = Arc::new(Semaphore::new(1000));
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_LENGTH, "900".parse().unwrap());
        let (bytes, reservation) = read_body(&budget, 1000, &headers, Body::from("x".repeat(100)))
            .await
            .unwrap();
        assert_eq!(bytes.len(), 100);
        assert!(reservation.bytes() >= 100 && reservation.bytes() < 900);
        drop(reservation);
        assert_eq!(budget.available_permits(), 1000);
    }

    #[tokio::test]
    async fn past_the_budget_is_overload_and_past_the_limit_too_large() {
        let budget = Arc::new(Semaphore::new(50));
        let error = read_body(
            &budget,
            1000,
            &HeaderMap::new(),
            Body::from("x".repeat(100)),
        )
        .await
        .err()
        .unwrap();
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(budget.available_permits(), 50);
        let budget = Arc::new(Semaphore::new(5000));
        let error = read_body(&budget, 10, &HeaderMap::new(), Body::from("x".repeat(11)))
            .await
            .err()
            .unwrap();
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn gzip_inflates_within_the_limit_and_the_budget() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
        let data = "line\n".repeat(10_000);
        let budget = Arc::new(Semaphore::new(4 << 20));
        let (bytes, reservation) = read_body(
            &budget,
            1 << 20,
            &headers,
            Body::from(gzip(data.as_bytes())),
        )
        .await
        .unwrap();
        assert_eq!(bytes, data.as_bytes());
        assert!(reservation.bytes() >= data.len());
        // A bomb: small on the wire, past the limit inflated.
        let bomb = gzip(&vec![0u8; 5 << 20]);
        let error = read_body(&budget, 1 << 20, &headers, Body::from(bomb.clone()))
            .await
            .err()
            .unwrap();
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
        // Within the limit but past the budget: overload, not a crash.
        let room = bomb.len() + 100_000;
        let small_budget = Arc::new(Semaphore::new(room));
        let error = read_body(&small_budget, 8 << 20, &headers, Body::from(bomb))
            .await
            .err()
            .unwrap();
        assert_eq!(error.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(small_budget.available_permits(), room);
        let error = read_body(&budget, 1 << 20, &headers, Body::from("not gzip"))
            .await
            .err()
            .unwrap();
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn deflate_and_snappy_inflate_within_the_limit_and_say_when_malformed() {
        let budget = Arc::new(Semaphore::new(4 << 20));
        let data = "line\n".repeat(10_000);
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        zlib.write_all(data.as_bytes()).unwrap();
        let snappy = snap::raw::Encoder::new()
            .compress_vec(data.as_bytes())
            .unwrap();
        for (encoding, body) in [("deflate", zlib.finish().unwrap()), ("snappy", snappy)] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_ENCODING, encoding.parse().unwrap());
            let (bytes, _) = read_body(&budget, 1 << 20, &headers, Body::from(body.clone()))
                .await
                .unwrap();
            assert_eq!(bytes, data.as_bytes(), "{encoding}");
            let error = read_body(&budget, 1_000, &headers, Body::from(body))
                .await
                .err()
                .unwrap();
            assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE, "{encoding}");
            let error = read_body(&budget, 1 << 20, &headers, Body::from("\x05garbage"))
                .await
                .err()
                .unwrap();
            assert_eq!(error.status, StatusCode::BAD_REQUEST, "{encoding}");
            assert!(
                error
                    .message
                    .starts_with(&format!("the body is not valid {encoding}")),
                "{}",
                error.message
            );
        }
        // Snappy frames, under either name.
        let mut framed = snap::write::FrameEncoder::new(Vec::new());
        framed.write_all(data.as_bytes()).unwrap();
        let framed = framed.into_inner().unwrap();
        for encoding in ["snappy", "x-snappy-framed"] {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_ENCODING, encoding.parse().unwrap());
            let (bytes, _) = read_body(&budget, 1 << 20, &headers, Body::from(framed.clone()))
                .await
                .unwrap();
            assert_eq!(bytes, data.as_bytes(), "framed {encoding}");
        }
        // A snappy block that claims 512 MiB is refused before anything is allocated.
        let mut reservation = Reservation::new(budget.clone());
        let error = snappy_block(b"\x80\x80\x80\x80\x02", 1 << 20, &mut reservation).unwrap_err();
        assert_eq!(error.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(reservation.bytes(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_falls_behind_its_pace_fails_naming_the_settings() {
        let (mut sender, body) = {
            let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
            let stream = http_body_util::StreamBody::new(tokio_stream_from(rx));
            (tx, Body::new(stream))
        };
        let pace = BodyPace {
            read_timeout: Duration::from_secs(10),
            min_rate: 100,
        };
        let paced = Body::new(MinRateBody::new(body, pace));
        let reader = tokio::spawn(read_small_body(paced, 1 << 20));
        // 500 bytes earn 5 s beyond the 10 s: the body is cut at 15 s, not before.
        sender
            .send(Ok(Frame::data(Bytes::from(vec![b'x'; 500]))))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(14_900)).await;
        assert!(!reader.is_finished());
        tokio::time::sleep(Duration::from_millis(200)).await;
        let error = reader.await.unwrap().err().unwrap();
        assert_eq!(error.status, StatusCode::REQUEST_TIMEOUT);
        assert!(
            error.message.contains("--body-min-rate"),
            "{}",
            error.message
        );
        let _ = &mut sender;
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Send {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
