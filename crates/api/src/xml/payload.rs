//! Request bodies of the XML API as the engine wants them: plain bytes. Undoes
//! `aws-chunked` framing (checking each chunk's chained signature when signed), and
//! checks what the request promised about its body: the signed SHA-256, the declared
//! length, and `x-amz-checksum-*` values in headers or trailers. A broken promise fails
//! the stream at its end, before the engine commits anything.

use super::XCtx;
use super::error::{S3Error, S3Result};
use super::sigv4::{ChunkSigner, Payload};
use aws_lc_rs::digest;
use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sealstore_storage::StorageError;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

/// The longest chunk header or trailer line accepted.
const MAX_LINE: usize = 4096;

/// Why a body stream failed, in S3's words; the engine only sees "invalid".
pub type Failure = Arc<OnceLock<S3Error>>;

/// The S3 error for a failed write: the body's own failure if it had one.
pub fn write_error(failure: &Failure, e: StorageError) -> S3Error {
    if let Some(f) = failure.get() {
        return f.clone();
    }
    let s3: S3Error = e.into();
    if s3.message.starts_with("Provided MD5 hash") {
        return S3Error::new(
            400,
            "BadDigest",
            "The Content-MD5 you specified did not match what we received.",
        );
    }
    if s3.message.starts_with("Provided CRC32C") {
        return S3Error::new(
            400,
            "BadDigest",
            "The CRC32C you specified did not match the calculated checksum.",
        );
    }
    s3
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Algorithm {
    Crc32,
    Crc32c,
    Sha1,
    Sha256,
}

impl Algorithm {
    fn from_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "x-amz-checksum-crc32" | "crc32" => Some(Self::Crc32),
            "x-amz-checksum-crc32c" | "crc32c" => Some(Self::Crc32c),
            "x-amz-checksum-sha1" | "sha1" => Some(Self::Sha1),
            "x-amz-checksum-sha256" | "sha256" => Some(Self::Sha256),
            _ => None,
        }
    }
    fn label(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }
}

/// A checksum being computed over the decoded body.
enum Running {
    Crc32(crc32fast::Hasher),
    Crc32c(u32),
    Digest(digest::Context),
}

impl Running {
    fn new(a: Algorithm) -> Self {
        match a {
            Algorithm::Crc32 => Self::Crc32(crc32fast::Hasher::new()),
            Algorithm::Crc32c => Self::Crc32c(0),
            Algorithm::Sha1 => Self::Digest(digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY)),
            Algorithm::Sha256 => Self::Digest(digest::Context::new(&digest::SHA256)),
        }
    }
    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc32(h) => h.update(data),
            Self::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            Self::Digest(d) => d.update(data),
        }
    }
    fn finish(self) -> Vec<u8> {
        match self {
            Self::Crc32(h) => h.finalize().to_be_bytes().to_vec(),
            Self::Crc32c(c) => c.to_be_bytes().to_vec(),
            Self::Digest(d) => d.finish().as_ref().to_vec(),
        }
    }
}

/// What the request says its decoded body will be.
struct Promises {
    payload_sha256: Option<[u8; 32]>,
    length: Option<u64>,
    /// A checksum and its value from a header (`Some`) or a trailer still to come.
    checksum: Option<(Algorithm, Option<Vec<u8>>)>,
}

/// aws-chunked framing state.
enum Frame {
    Header,
    Data { left: u64, signature: Option<String> },
    DataEnd { signature: Option<String> },
    Trailers,
    Done,
}

struct Decoder {
    input: Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>,
    buf: BytesMut,
    input_done: bool,
    /// `None`: the body is not aws-chunked.
    frame: Option<Frame>,
    signer: Option<ChunkSigner>,
    chunk_hash: Option<digest::Context>,
    promises: Promises,
    payload_hash: Option<PayloadHash>,
    checksum: Option<Running>,
    seen: u64,
    failure: Failure,
    finished: bool,
}

fn fail(failure: &Failure, e: S3Error) -> StorageError {
    let message = e.message.clone();
    let _ = failure.set(e);
    StorageError::invalid(message)
}

fn incomplete(message: &str) -> S3Error {
    S3Error::new(400, "IncompleteBody", message)
}

impl Decoder {
    fn err(&self, e: S3Error) -> StorageError {
        fail(&self.failure, e)
    }

    /// Takes one `\r\n`-terminated line from the buffer, if complete.
    fn line(&mut self) -> Result<Option<String>, StorageError> {
        match self.buf.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                let line = self.buf.split_to(i);
                self.buf.advance(2);
                String::from_utf8(line.to_vec())
                    .map(Some)
                    .map_err(|_| self.err(S3Error::invalid_request("A chunk header is not UTF-8.")))
            }
            None if self.buf.len() > MAX_LINE => Err(self.err(S3Error::invalid_request("A chunk header is too long."))),
            None => Ok(None),
        }
    }

    async fn fill(&mut self) -> Result<bool, StorageError> {
        if self.input_done {
            return Ok(false);
        }
        match self.input.next().await {
            Some(Ok(b)) => {
                self.buf.extend_from_slice(&b);
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => {
                self.input_done = true;
                Ok(false)
            }
        }
    }

    fn observe(&mut self, data: &Bytes) {
        self.seen += data.len() as u64;
        if let Some(h) = &mut self.payload_hash {
            h.update(data);
        }
        if let Some(c) = &mut self.checksum {
            c.update(data);
        }
    }

    /// The next piece of decoded body; `None` at its verified end.
    async fn next(&mut self) -> Option<Result<Bytes, StorageError>> {
        if self.finished {
            return None;
        }
        let r = self.step().await;
        if matches!(r, None | Some(Err(_))) {
            self.finished = true;
        }
        r
    }

    async fn step(&mut self) -> Option<Result<Bytes, StorageError>> {
        loop {
            let Some(frame) = self.frame.take() else {
                // Plain body: pass through.
                if !self.buf.is_empty() {
                    let b = self.buf.split().freeze();
                    self.observe(&b);
                    return Some(Ok(b));
                }
                return match self.input.next().await {
                    Some(Ok(b)) => {
                        self.observe(&b);
                        Some(Ok(b))
                    }
                    Some(Err(e)) => Some(Err(e)),
                    None => self.finish().err().map(Err),
                };
            };
            match frame {
                Frame::Header => match self.line() {
                    Err(e) => return Some(Err(e)),
                    Ok(Some(line)) => match self.header(&line) {
                        Ok(f) => self.frame = Some(f),
                        Err(e) => return Some(Err(e)),
                    },
                    Ok(None) => {
                        self.frame = Some(Frame::Header);
                        match self.fill().await {
                            Ok(true) => {}
                            Ok(false) => return Some(Err(self.err(incomplete("The aws-chunked body ended early.")))),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                },
                Frame::Data { left, signature } => {
                    if left == 0 {
                        self.frame = Some(Frame::DataEnd { signature });
                        continue;
                    }
                    if self.buf.is_empty() {
                        self.frame = Some(Frame::Data { left, signature });
                        match self.fill().await {
                            Ok(true) => continue,
                            Ok(false) => return Some(Err(self.err(incomplete("The aws-chunked body ended early.")))),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    let n = (self.buf.len() as u64).min(left) as usize;
                    let data = self.buf.split_to(n).freeze();
                    if let Some(h) = &mut self.chunk_hash {
                        h.update(&data);
                    }
                    self.observe(&data);
                    self.frame = Some(Frame::Data {
                        left: left - n as u64,
                        signature,
                    });
                    return Some(Ok(data));
                }
                Frame::DataEnd { signature } => {
                    if self.buf.len() < 2 {
                        self.frame = Some(Frame::DataEnd { signature });
                        match self.fill().await {
                            Ok(true) => continue,
                            Ok(false) => return Some(Err(self.err(incomplete("The aws-chunked body ended early.")))),
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    if &self.buf[..2] != b"\r\n" {
                        return Some(Err(
                            self.err(S3Error::invalid_request("A chunk is longer than its header says."))
                        ));
                    }
                    self.buf.advance(2);
                    if let Err(e) = self.check_chunk_signature(signature.as_deref()) {
                        return Some(Err(e));
                    }
                    self.frame = Some(Frame::Header);
                }
                Frame::Trailers => match self.line() {
                    Err(e) => return Some(Err(e)),
                    Ok(None) => {
                        self.frame = Some(Frame::Trailers);
                        match self.fill().await {
                            Ok(true) => {}
                            Ok(false) => {
                                return Some(Err(self.err(incomplete("The aws-chunked trailer ended early."))));
                            }
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    Ok(Some(line)) if line.is_empty() => {
                        self.frame = Some(Frame::Done);
                    }
                    Ok(Some(line)) => {
                        if let Err(e) = self.trailer(&line) {
                            return Some(Err(e));
                        }
                        self.frame = Some(Frame::Trailers);
                    }
                },
                Frame::Done => {
                    self.frame = Some(Frame::Done);
                    // Nothing may follow the framing.
                    loop {
                        if !self.buf.is_empty() {
                            return Some(Err(self.err(S3Error::invalid_request(
                                "Data follows the end of the aws-chunked body.",
                            ))));
                        }
                        match self.fill().await {
                            Ok(true) => {}
                            Ok(false) => break,
                            Err(e) => return Some(Err(e)),
                        }
                    }
                    return self.finish().err().map(Err);
                }
            }
        }
    }

    /// A chunk header line: `hex-size[;chunk-signature=sig]`.
    fn header(&mut self, line: &str) -> Result<Frame, StorageError> {
        let (size, ext) = line.split_once(';').unwrap_or((line, ""));
        let size = u64::from_str_radix(size.trim(), 16)
            .map_err(|_| self.err(S3Error::invalid_request(format!("Invalid chunk size \"{size}\"."))))?;
        let signature = ext
            .split(';')
            .find_map(|e| e.trim().strip_prefix("chunk-signature="))
            .map(str::to_owned);
        if self.signer.is_some() && signature.is_none() {
            return Err(self.err(S3Error::new(
                403,
                "SignatureDoesNotMatch",
                "A chunk of a signed streaming upload has no chunk-signature.",
            )));
        }
        if self.signer.is_some() {
            self.chunk_hash = Some(digest::Context::new(&digest::SHA256));
        }
        if size == 0 {
            // The last chunk; then trailers (if any) and an empty line.
            self.check_chunk_signature(signature.as_deref())?;
            return Ok(Frame::Trailers);
        }
        Ok(Frame::Data { left: size, signature })
    }

    fn check_chunk_signature(&mut self, signature: Option<&str>) -> Result<(), StorageError> {
        let (Some(signer), Some(sig)) = (self.signer.as_mut(), signature) else {
            return Ok(());
        };
        let hash = self
            .chunk_hash
            .take()
            .map_or_else(|| digest::digest(&digest::SHA256, b""), digest::Context::finish);
        if !signer.verify_chunk_hash(hash.as_ref(), sig) {
            return Err(self.err(S3Error::new(
                403,
                "SignatureDoesNotMatch",
                "The chunk signature we calculated does not match the signature you provided.",
            )));
        }
        Ok(())
    }

    /// A trailing header: a checksum, or the trailer's signature.
    fn trailer(&mut self, line: &str) -> Result<(), StorageError> {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| self.err(S3Error::invalid_request(format!("Malformed trailer \"{line}\"."))))?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "x-amz-trailer-signature" {
            let canonical = match &self.promises.checksum {
                Some((a, Some(v))) => format!(
                    "x-amz-checksum-{}:{}\n",
                    a.label().to_ascii_lowercase(),
                    STANDARD.encode(v)
                ),
                _ => String::new(),
            };
            let ok = self.signer.as_mut().is_none_or(|s| s.verify_trailer(&canonical, value));
            if !ok {
                return Err(self.err(S3Error::new(
                    403,
                    "SignatureDoesNotMatch",
                    "The trailer signature we calculated does not match the signature you provided.",
                )));
            }
            return Ok(());
        }
        let Some(alg) = Algorithm::from_name(&name) else {
            return Err(self.err(S3Error::invalid_request(format!(
                "The trailer {name} is not supported (CRC32, CRC32C, SHA1 and SHA256 checksums are)."
            ))));
        };
        let bytes = STANDARD.decode(value).map_err(|_| {
            self.err(S3Error::invalid_request(format!(
                "Value for {name} trailing header is invalid."
            )))
        })?;
        match &mut self.promises.checksum {
            Some((a, v @ None)) if *a == alg => *v = Some(bytes),
            _ => {
                return Err(self.err(S3Error::invalid_request(format!(
                    "The trailer {name} was not announced in x-amz-trailer."
                ))));
            }
        }
        Ok(())
    }

    /// End of body: every promise is checked.
    fn finish(&mut self) -> Result<(), StorageError> {
        if let Some(want) = self.promises.length
            && want != self.seen
        {
            return Err(self.err(incomplete(&format!(
                "The body had {} bytes, but the request declared {want}.",
                self.seen
            ))));
        }
        if let (Some(want), Some(h)) = (self.promises.payload_sha256, self.payload_hash.take())
            && h.finish() != Some(want)
        {
            return Err(self.err(S3Error::new(
                400,
                "XAmzContentSHA256Mismatch",
                "The provided 'x-amz-content-sha256' header does not match what was computed.",
            )));
        }
        if let Some((alg, want)) = self.promises.checksum.take() {
            let Some(want) = want else {
                return Err(self.err(S3Error::invalid_request(format!(
                    "The announced x-amz-checksum-{} trailer never came.",
                    alg.label().to_ascii_lowercase()
                ))));
            };
            let got = self.checksum.take().map(Running::finish).unwrap_or_default();
            if aws_lc_rs::constant_time::verify_slices_are_equal(&got, &want).is_err() {
                return Err(self.err(S3Error::new(
                    400,
                    "BadDigest",
                    format!(
                        "The {} you specified did not match the calculated checksum.",
                        alg.label()
                    ),
                )));
            }
        }
        Ok(())
    }
}

/// Bodies at least this large have their signed SHA-256 computed on a thread of their
/// own, beside encryption and MD5 (as the engine does MD5), so one stream is not bound
/// by the sum of the three.
const HASH_THREAD_MIN: u64 = 1 << 20;

/// The SHA-256 of a body whose hash was signed.
enum PayloadHash {
    Inline(digest::Context),
    Thread {
        tx: Option<std::sync::mpsc::SyncSender<Bytes>>,
        done: std::sync::mpsc::Receiver<[u8; 32]>,
    },
}

impl PayloadHash {
    fn new(declared_len: u64) -> Self {
        if declared_len < HASH_THREAD_MIN {
            return Self::Inline(digest::Context::new(&digest::SHA256));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(16);
        let (done_tx, done) = std::sync::mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new().name("sha256".into()).spawn(move || {
            let mut ctx = digest::Context::new(&digest::SHA256);
            for b in rx {
                ctx.update(&b);
            }
            let mut out = [0u8; 32];
            out.copy_from_slice(ctx.finish().as_ref());
            let _ = done_tx.send(out);
        });
        match spawned {
            Ok(_) => Self::Thread { tx: Some(tx), done },
            Err(_) => Self::Inline(digest::Context::new(&digest::SHA256)),
        }
    }

    fn update(&mut self, data: &Bytes) {
        match self {
            Self::Inline(c) => c.update(data),
            Self::Thread { tx, .. } => {
                if let Some(t) = tx
                    && t.send(data.clone()).is_err()
                {
                    *tx = None;
                }
            }
        }
    }

    /// The digest; `None` if the hashing thread died (which fails the check).
    fn finish(self) -> Option<[u8; 32]> {
        match self {
            Self::Inline(c) => c.finish().as_ref().try_into().ok(),
            Self::Thread { tx, done } => {
                drop(tx);
                // A blocking wait on a runtime thread, but a short one: the thread is at
                // most 16 chunks behind.
                done.recv().ok()
            }
        }
    }
}

fn bad_header(name: &str) -> S3Error {
    S3Error::invalid_request(format!("Value for {name} header is invalid."))
}

/// The decoded, checked body of an object write, and where its failure will be told.
pub fn object_body(
    ctx: &XCtx,
    body: Body,
) -> S3Result<(
    impl Stream<Item = Result<Bytes, StorageError>> + Send + 'static,
    Failure,
)> {
    let payload = ctx
        .signature
        .as_ref()
        .map(|v| v.signed.payload.clone())
        .or_else(|| {
            // Unsigned (bearer or dev) requests may still frame their body.
            match ctx.header("x-amz-content-sha256") {
                Some("STREAMING-UNSIGNED-PAYLOAD-TRAILER") => Some(Payload::Streaming {
                    signed: false,
                    trailer: true,
                }),
                _ => None,
            }
        })
        .unwrap_or(Payload::Unsigned);
    let chunked = matches!(payload, Payload::Streaming { .. })
        || ctx
            .header("content-encoding")
            .is_some_and(|v| v.split(',').any(|e| e.trim().eq_ignore_ascii_case("aws-chunked")));
    let length = if chunked {
        Some(
            ctx.header("x-amz-decoded-content-length")
                .ok_or_else(|| {
                    S3Error::new(
                        411,
                        "MissingContentLength",
                        "An aws-chunked body needs x-amz-decoded-content-length.",
                    )
                })?
                .trim()
                .parse::<u64>()
                .map_err(|_| bad_header("x-amz-decoded-content-length"))?,
        )
    } else {
        ctx.content_length()
    };
    // One checksum, from a header now or a trailer later.
    let mut checksum = None;
    for (name, value) in &ctx.headers {
        let n = name.as_str();
        if let Some(alg) = Algorithm::from_name(n).filter(|_| n.starts_with("x-amz-checksum-")) {
            let v = value
                .to_str()
                .ok()
                .and_then(|v| STANDARD.decode(v.trim()).ok())
                .ok_or_else(|| bad_header(n))?;
            if checksum.is_some() {
                return Err(S3Error::invalid_request("Expecting a single x-amz-checksum- header."));
            }
            checksum = Some((alg, Some(v)));
        } else if n.starts_with("x-amz-checksum-")
            && n != "x-amz-checksum-algorithm"
            && n != "x-amz-checksum-type"
            && n != "x-amz-checksum-mode"
        {
            return Err(S3Error::not_implemented(&format!("The checksum {n}")));
        }
    }
    let trailer = ctx.header("x-amz-trailer").map(str::trim).filter(|t| !t.is_empty());
    if let Some(t) = trailer {
        let alg =
            Algorithm::from_name(t).ok_or_else(|| S3Error::not_implemented(&format!("The trailing checksum {t}")))?;
        if checksum.is_some() {
            return Err(S3Error::invalid_request("Expecting a single x-amz-checksum- header."));
        }
        checksum = Some((alg, None));
    }
    let signer = match (&payload, &ctx.signature) {
        (Payload::Streaming { signed: true, .. }, Some(v)) => Some(ChunkSigner::new(&v.signed, v.key.clone())),
        _ => None,
    };
    let payload_sha256 = match payload {
        Payload::Sha256(h) => Some(h),
        _ => None,
    };
    let failure: Failure = Arc::new(OnceLock::new());
    // The raw (framed) body's own length is still checked against Content-Length.
    let raw = crate::gcs::body_stream(body, if chunked { ctx.content_length() } else { None });
    let decoder = Decoder {
        input: Box::pin(raw),
        buf: BytesMut::new(),
        input_done: false,
        frame: chunked.then_some(Frame::Header),
        signer,
        chunk_hash: None,
        payload_hash: payload_sha256.map(|_| PayloadHash::new(length.unwrap_or(0))),
        checksum: checksum.as_ref().map(|(a, _)| Running::new(*a)),
        promises: Promises {
            payload_sha256,
            length,
            checksum,
        },
        seen: 0,
        failure: failure.clone(),
        finished: false,
    };
    let stream = futures::stream::unfold(decoder, |mut d| async move { d.next().await.map(|r| (r, d)) });
    Ok((stream, failure))
}

/// A small body (an XML document), decoded and checked, at most the buffered-body limit.
pub async fn read_small(ctx: &XCtx, body: Body) -> S3Result<Bytes> {
    let limit = ctx.app.limits.max_body_bytes;
    let (stream, failure) = object_body(ctx, body)?;
    futures::pin_mut!(stream);
    let mut out = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| write_error(&failure, e))?;
        if out.len() + chunk.len() > limit {
            return Err(S3Error::new(
                400,
                "MaxMessageLengthExceeded",
                format!("Your request was too big: XML documents are limited to {limit} bytes."),
            ));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoder(
        body: Vec<Bytes>,
        chunked: bool,
        length: Option<u64>,
        checksum: Option<(Algorithm, Option<Vec<u8>>)>,
    ) -> Decoder {
        let input = futures::stream::iter(body.into_iter().map(Ok::<_, StorageError>));
        Decoder {
            input: Box::pin(input),
            buf: BytesMut::new(),
            input_done: false,
            frame: chunked.then_some(Frame::Header),
            signer: None,
            chunk_hash: None,
            payload_hash: None,
            checksum: checksum.as_ref().map(|(a, _)| Running::new(*a)),
            promises: Promises {
                payload_sha256: None,
                length,
                checksum,
            },
            seen: 0,
            failure: Arc::new(OnceLock::new()),
            finished: false,
        }
    }

    fn run(mut d: Decoder) -> Result<Vec<u8>, StorageError> {
        futures::executor::block_on(async move {
            let mut out = vec![];
            while let Some(b) = d.next().await {
                out.extend_from_slice(&b?);
            }
            Ok(out)
        })
    }

    fn frame(data: &[u8], chunk: usize, trailer: Option<String>) -> Vec<u8> {
        let mut out = vec![];
        for c in data.chunks(chunk.max(1)) {
            out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            out.extend_from_slice(c);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n");
        if let Some(t) = trailer {
            out.extend_from_slice(t.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    /// Splits `bytes` into pieces at the given cut points, as a network would.
    fn pieces(bytes: Vec<u8>, cuts: &[usize]) -> Vec<Bytes> {
        let mut out = vec![];
        let mut rest = Bytes::from(bytes);
        for c in cuts {
            let at = c % (rest.len() + 1);
            out.push(rest.split_to(at));
        }
        out.push(rest);
        out
    }

    #[test]
    fn chunked_bodies_decode_and_checksums_are_checked() {
        let data = b"hello world".to_vec();
        let crc = crc32fast::hash(&data).to_be_bytes().to_vec();
        let trailer = format!("x-amz-checksum-crc32:{}", STANDARD.encode(&crc));
        let body = pieces(frame(&data, 4, Some(trailer)), &[3, 7, 1]);
        let d = decoder(body, true, Some(11), Some((Algorithm::Crc32, None)));
        assert_eq!(run(d).unwrap(), data);
        let bad = format!("x-amz-checksum-crc32:{}", STANDARD.encode([0u8; 4]));
        let d = decoder(
            vec![Bytes::from(frame(&data, 4, Some(bad)))],
            true,
            Some(11),
            Some((Algorithm::Crc32, None)),
        );
        let f = d.failure.clone();
        assert!(run(d).is_err());
        assert_eq!(f.get().unwrap().code, "BadDigest");
        // A declared length that the body does not have.
        let d = decoder(vec![Bytes::from(frame(&data, 4, None))], true, Some(12), None);
        assert!(run(d).is_err());
        // Bytes after the final chunk.
        let mut extra = frame(&data, 4, None);
        extra.extend_from_slice(b"junk");
        assert!(run(decoder(vec![Bytes::from(extra)], true, None, None)).is_err());
    }

    proptest::proptest! {
        /// Fuzz: any body, framed or not, cut anywhere, decodes or fails cleanly; a
        /// well-framed body decodes to exactly its data.
        #[test]
        fn aws_chunked_decoding_never_panics(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000),
            junk in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            chunk in 1usize..700,
            cuts in proptest::collection::vec(0usize..3000, 0..6),
        ) {
            let framed = frame(&data, chunk, None);
            let got = run(decoder(pieces(framed, &cuts), true, Some(data.len() as u64), None)).unwrap();
            proptest::prop_assert_eq!(got, data);
            let _ = run(decoder(pieces(junk, &cuts), true, None, None));
        }
    }
}
