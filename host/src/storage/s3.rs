//! [`BlobStore`] on S3 or an S3-compatible server (Garage, MinIO), so every
//! host of a distributed deployment sees the same targets, components and
//! run records. Credentials come from the usual AWS chain (environment,
//! profile files); a custom endpoint uses path-style addressing. Large files
//! go up as concurrent multipart uploads, aborted on failure so no orphaned
//! parts are left billing. This module never logs or returns credentials.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncSeekExt, AsyncWriteExt};

use super::{BlobStore, Progress, StoreError, check_key};

/// Files larger than this are uploaded in parts of this size.
pub const PART_SIZE: u64 = 16 << 20;

/// Parts uploaded at the same time.
const PARTS_IN_FLIGHT: usize = 4;

/// S3 allows at most this many parts per upload.
const MAX_PARTS: u64 = 10_000;

/// Attempts per request, including the first.
const MAX_ATTEMPTS: u32 = 5;

/// Whole downloads attempted when the body stream breaks mid-way (the SDK
/// retries requests, not bodies).
const DOWNLOAD_ATTEMPTS: u32 = 3;

/// Region used when the configuration names none.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Where an [`S3Store`] keeps its blobs; the `[storage]` table of the host
/// configuration.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name; the bucket must exist.
    pub bucket: String,
    /// Endpoint URL of an S3-compatible server (`http://127.0.0.1:3900` for
    /// Garage); `None` means AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Signing region; defaults to `us-east-1` (Garage's default is `garage`).
    #[serde(default)]
    pub region: Option<String>,
    /// Prefix put before every key, so several deployments can share a bucket.
    #[serde(default)]
    pub prefix: String,
    /// Path-style addressing (`endpoint/bucket/key`), which Garage and MinIO
    /// need; virtual-host style when false.
    #[serde(default = "yes")]
    pub path_style: bool,
}

fn yes() -> bool {
    true
}

impl Default for S3Config {
    /// No bucket, AWS, `us-east-1`, no prefix, path-style (as when parsed).
    fn default() -> Self {
        S3Config {
            bucket: String::new(),
            endpoint: None,
            region: None,
            prefix: String::new(),
            path_style: true,
        }
    }
}

/// Blobs in an S3 bucket.
#[derive(Debug)]
pub struct S3Store {
    config: S3Config,
    /// `config.prefix` without surrounding slashes, plus `/` when non-empty.
    prefix: String,
    /// Built on first use: loading the AWS configuration is async.
    client: tokio::sync::OnceCell<Client>,
}

impl S3Store {
    /// A store for `config`, checked but not yet connected: the first request
    /// loads credentials and reaches the server.
    pub fn new(config: S3Config) -> anyhow::Result<S3Store> {
        let bucket = config.bucket.trim();
        if bucket.is_empty() || bucket.contains('/') || bucket.contains(char::is_whitespace) {
            anyhow::bail!(
                "storage bucket `{}` is not a bucket name; set `bucket` to the name of an existing bucket \
                 (for Garage: `garage bucket create <name>`)",
                config.bucket
            );
        }
        if let Some(endpoint) = &config.endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            anyhow::bail!(
                "storage endpoint `{endpoint}` is not a URL; write it like `http://127.0.0.1:3900`"
            );
        }
        let trimmed = config.prefix.trim_matches('/');
        let prefix = if trimmed.is_empty() {
            String::new()
        } else {
            check_key(trimmed).map_err(|_| {
                anyhow::anyhow!(
                    "storage prefix `{}` is invalid: use slash-separated names without `..` or empty segments",
                    config.prefix
                )
            })?;
            format!("{trimmed}/")
        };
        Ok(S3Store {
            config,
            prefix,
            client: tokio::sync::OnceCell::new(),
        })
    }

    /// The configuration this store was made from.
    pub fn config(&self) -> &S3Config {
        &self.config
    }

    async fn client(&self) -> &Client {
        self.client.get_or_init(|| build_client(&self.config)).await
    }

    /// The object key for a blob key.
    fn object_key(&self, key: &str) -> Result<String, StoreError> {
        check_key(key)?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn bucket(&self) -> &str {
        self.config.bucket.trim()
    }

    fn endpoint(&self) -> String {
        match &self.config.endpoint {
            Some(e) => e.clone(),
            None => format!(
                "AWS S3 in {}",
                self.config.region.as_deref().unwrap_or(DEFAULT_REGION)
            ),
        }
    }

    /// A [`StoreError::Backend`] saying what failed and what to check.
    fn backend<E>(&self, key: &str, op: &str, err: &SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let detail = concise(err, status);
        let unreachable = matches!(
            err,
            SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
        );
        let hint = hint(status, err.code(), &detail, unreachable);
        StoreError::Backend {
            key: key.to_string(),
            message: format!(
                "{op} in bucket `{}` at {} failed: {detail}; {}",
                self.bucket(),
                self.endpoint(),
                hint.text(self.bucket(), &self.endpoint())
            ),
        }
    }

    fn local_io(key: &str, source: std::io::Error) -> StoreError {
        StoreError::Io {
            key: key.to_string(),
            source,
        }
    }

    /// Uploads `len` bytes from `source`: one request up to [`PART_SIZE`],
    /// a multipart upload above.
    async fn upload(
        &self,
        key: &str,
        source: Source<'_>,
        len: u64,
        progress: Progress<'_>,
    ) -> Result<(), StoreError> {
        let object = self.object_key(key)?;
        if len <= PART_SIZE {
            let body = source.part(key, 0, len).await?;
            self.client()
                .await
                .put_object()
                .bucket(self.bucket())
                .key(&object)
                .content_length(len as i64)
                .body(body)
                .send()
                .await
                .map_err(|e| self.backend(key, "upload", &e))?;
            if let Some(report) = progress {
                report(len);
            }
            return Ok(());
        }
        let parts = len.div_ceil(PART_SIZE);
        if parts > MAX_PARTS {
            return Err(StoreError::Backend {
                key: key.to_string(),
                message: format!(
                    "{len} bytes is more than S3 accepts in one object ({MAX_PARTS} parts of {PART_SIZE} bytes); \
                     split the blob"
                ),
            });
        }
        let client = self.client().await;
        let created = client
            .create_multipart_upload()
            .bucket(self.bucket())
            .key(&object)
            .send()
            .await
            .map_err(|e| self.backend(key, "starting a multipart upload", &e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(StoreError::Backend {
                key: key.to_string(),
                message: format!(
                    "{} started a multipart upload without an upload id; check that the endpoint is an S3 server",
                    self.endpoint()
                ),
            });
        };
        // Also abort when the caller stops waiting half-way.
        let mut abandon = AbortOnDrop {
            client: client.clone(),
            bucket: self.bucket().to_string(),
            object: object.clone(),
            upload_id: upload_id.clone(),
            armed: true,
        };
        let result = async {
            let completed = self
                .upload_parts(key, &object, &upload_id, &source, len, progress)
                .await?;
            client
                .complete_multipart_upload()
                .bucket(self.bucket())
                .key(&object)
                .upload_id(&upload_id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(completed))
                        .build(),
                )
                .send()
                .await
                .map_err(|e| self.backend(key, "completing a multipart upload", &e))?;
            Ok::<(), StoreError>(())
        }
        .await;
        abandon.armed = false;
        if result.is_err() {
            // Parts of an unfinished upload are stored (and billed) until
            // aborted.
            let aborted = client
                .abort_multipart_upload()
                .bucket(self.bucket())
                .key(&object)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(e) = aborted {
                tracing::warn!(
                    key,
                    upload_id,
                    error = %concise(&e, e.raw_response().map(|r| r.status().as_u16())),
                    "cannot abort a failed multipart upload; its parts stay in the bucket until a lifecycle rule removes them"
                );
            }
        }
        result
    }

    async fn upload_parts(
        &self,
        key: &str,
        object: &str,
        upload_id: &str,
        source: &Source<'_>,
        len: u64,
        progress: Progress<'_>,
    ) -> Result<Vec<CompletedPart>, StoreError> {
        let client = self.client().await;
        let count = len.div_ceil(PART_SIZE);
        let mut uploads = futures::stream::iter(1..=count)
            .map(|number| async move {
                let offset = (number - 1) * PART_SIZE;
                let size = PART_SIZE.min(len - offset);
                let body = source.part(key, offset, size).await?;
                let done = client
                    .upload_part()
                    .bucket(self.bucket())
                    .key(object)
                    .upload_id(upload_id)
                    .part_number(number as i32)
                    .content_length(size as i64)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| {
                        self.backend(key, &format!("uploading part {number} of {count}"), &e)
                    })?;
                let part = CompletedPart::builder()
                    .part_number(number as i32)
                    .set_e_tag(done.e_tag().map(str::to_string))
                    .build();
                Ok::<_, StoreError>((part, size))
            })
            .buffer_unordered(PARTS_IN_FLIGHT);
        let mut parts = Vec::with_capacity(count as usize);
        let mut uploaded = 0u64;
        // Returning early drops the stream, cancelling parts still in flight.
        while let Some((part, size)) = uploads.try_next().await? {
            uploaded += size;
            if let Some(report) = progress {
                report(uploaded);
            }
            parts.push(part);
        }
        parts.sort_by_key(|p| p.part_number());
        Ok(parts)
    }

    /// One attempt at streaming `key` into `tmp`; the flag says whether a
    /// fresh attempt may help (the body broke off mid-way).
    async fn download_once(
        &self,
        key: &str,
        object: &str,
        tmp: &std::fs::File,
    ) -> Result<u64, (StoreError, bool)> {
        let out = self
            .client()
            .await
            .get_object()
            .bucket(self.bucket())
            .key(object)
            .send()
            .await
            .map_err(|e| (self.get_error(key, &e), false))?;
        // Start over on a retry: the clone shares the file offset.
        let file = tmp
            .try_clone()
            .map_err(|e| (Self::local_io(key, e), false))?;
        file.set_len(0)
            .map_err(|e| (Self::local_io(key, e), false))?;
        let mut file = tokio::fs::File::from_std(file);
        file.seek(std::io::SeekFrom::Start(0))
            .await
            .map_err(|e| (Self::local_io(key, e), false))?;
        let mut body = out.body;
        let mut written = 0u64;
        loop {
            match body.try_next().await {
                Ok(Some(chunk)) => {
                    file.write_all(&chunk)
                        .await
                        .map_err(|e| (Self::local_io(key, e), false))?;
                    written += chunk.len() as u64;
                }
                Ok(None) => break,
                Err(e) => {
                    let error = StoreError::Backend {
                        key: key.to_string(),
                        message: format!(
                            "the download from {} broke off after {written} bytes: {}; check the network \
                             to the endpoint and retry",
                            self.endpoint(),
                            error_chain(&e)
                        ),
                    };
                    return Err((error, true));
                }
            }
        }
        file.flush()
            .await
            .map_err(|e| (Self::local_io(key, e), false))?;
        file.sync_all()
            .await
            .map_err(|e| (Self::local_io(key, e), false))?;
        Ok(written)
    }

    fn get_error(
        &self,
        key: &str,
        err: &SdkError<aws_sdk_s3::operation::get_object::GetObjectError>,
    ) -> StoreError {
        let missing = err.as_service_error().is_some_and(|e| e.is_no_such_key())
            || (err
                .raw_response()
                .is_some_and(|r| r.status().as_u16() == 404)
                && err.code() != Some("NoSuchBucket"));
        if missing {
            StoreError::NotFound(key.to_string())
        } else {
            self.backend(key, "download", err)
        }
    }
}

/// Aborts a multipart upload whose future is dropped before it finished.
struct AbortOnDrop {
    client: Client,
    bucket: String,
    object: String,
    upload_id: String,
    armed: bool,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let request = self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(&self.object)
            .upload_id(&self.upload_id);
        runtime.spawn(async move {
            if let Err(e) = request.send().await {
                tracing::warn!(
                    error = %concise(&e, e.raw_response().map(|r| r.status().as_u16())),
                    "cannot abort a cancelled multipart upload; its parts stay in the bucket until a lifecycle rule removes them"
                );
            }
        });
    }
}

/// Where upload bytes come from.
enum Source<'a> {
    File(&'a Path),
    Bytes(&'a [u8]),
}

impl Source<'_> {
    async fn part(&self, key: &str, offset: u64, size: u64) -> Result<ByteStream, StoreError> {
        match self {
            Source::File(path) => ByteStream::read_from()
                .path(path)
                .offset(offset)
                .length(Length::Exact(size))
                .build()
                .await
                .map_err(|e| S3Store::local_io(key, std::io::Error::other(e))),
            Source::Bytes(bytes) => {
                let range = offset as usize..(offset + size) as usize;
                Ok(ByteStream::from(bytes[range].to_vec()))
            }
        }
    }
}

async fn build_client(config: &S3Config) -> Client {
    let region = config
        .region
        .clone()
        .unwrap_or_else(|| DEFAULT_REGION.to_string());
    let retry = RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(Duration::from_millis(200))
        .with_max_backoff(Duration::from_secs(10));
    // A part is at most PART_SIZE, so two minutes per attempt is slow but
    // alive; downloads are guarded by the SDK's stalled-stream protection.
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5))
        .operation_attempt_timeout(Duration::from_secs(120))
        .build();
    let shared = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region))
        .retry_config(retry)
        .timeout_config(timeouts)
        .load()
        .await;
    let mut builder =
        aws_sdk_s3::config::Builder::from(&shared).force_path_style(config.path_style);
    if let Some(endpoint) = &config.endpoint {
        // S3-compatible servers do not all accept the SDK's default
        // trailing checksums; send them only where the API requires them.
        builder = builder
            .endpoint_url(endpoint)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
    }
    Client::from_conf(builder.build())
}

/// The error's code and message from the server, or the chain of causes
/// for failures before a response (without the SDK's debug dump).
fn concise<E>(err: &SdkError<E>, status: Option<u16>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    if let Some(code) = err.code() {
        return match err.message() {
            Some(message) => format!("{code}: {message}"),
            None => code.to_string(),
        };
    }
    if let (SdkError::ServiceError(_), Some(status)) = (err, status) {
        return format!("HTTP status {status}");
    }
    error_chain(err)
}

/// `error: cause: cause`, skipping causes that repeat their parent.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// What to tell the operator to check after a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hint {
    Endpoint,
    Credentials,
    Bucket,
    Region,
    Any,
}

impl Hint {
    fn text(self, bucket: &str, endpoint: &str) -> String {
        match self {
            Hint::Endpoint => {
                format!("check that `endpoint` ({endpoint}) is right and the server is running")
            }
            Hint::Credentials => format!(
                "check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the AWS profile) \
                 and that the key may access bucket `{bucket}`"
            ),
            Hint::Bucket => format!(
                "check that bucket `{bucket}` exists (for Garage: `garage bucket create {bucket}`)"
            ),
            Hint::Region => {
                "check `region` (Garage uses `garage` unless configured otherwise)".to_string()
            }
            Hint::Any => "check the endpoint, the credentials and the bucket".to_string(),
        }
    }
}

fn hint(status: Option<u16>, code: Option<&str>, detail: &str, unreachable: bool) -> Hint {
    let lower = detail.to_ascii_lowercase();
    if lower.contains("credential") {
        return Hint::Credentials;
    }
    match code {
        Some("NoSuchBucket") => return Hint::Bucket,
        Some(
            "InvalidAccessKeyId"
            | "SignatureDoesNotMatch"
            | "AccessDenied"
            | "InvalidToken"
            | "ExpiredToken",
        ) => {
            return Hint::Credentials;
        }
        Some(
            "AuthorizationHeaderMalformed"
            | "PermanentRedirect"
            | "IllegalLocationConstraintException",
        ) => {
            return Hint::Region;
        }
        _ => {}
    }
    if unreachable {
        return Hint::Endpoint;
    }
    match status {
        Some(401 | 403) => Hint::Credentials,
        Some(301 | 400) if lower.contains("region") => Hint::Region,
        _ => Hint::Any,
    }
}

#[async_trait]
impl BlobStore for S3Store {
    async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        let len = bytes.len() as u64;
        self.upload(key, Source::Bytes(&bytes), len, None).await
    }

    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        progress: Progress<'_>,
    ) -> Result<(), StoreError> {
        self.object_key(key)?;
        let len = tokio::fs::metadata(path)
            .await
            .map_err(|e| Self::local_io(key, e))?
            .len();
        self.upload(key, Source::File(path), len, progress).await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let object = self.object_key(key)?;
        let out = self
            .client()
            .await
            .get_object()
            .bucket(self.bucket())
            .key(&object)
            .send()
            .await
            .map_err(|e| self.get_error(key, &e))?;
        let bytes = out.body.collect().await.map_err(|e| StoreError::Backend {
            key: key.to_string(),
            message: format!(
                "the download from {} broke off: {}; check the network to the endpoint and retry",
                self.endpoint(),
                error_chain(&e)
            ),
        })?;
        Ok(bytes.into_bytes().to_vec())
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let object = self.object_key(key)?;
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        let tmp = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir)?;
            tempfile::NamedTempFile::new_in(&dir)
        })
        .await
        .map_err(|e| Self::local_io(key, std::io::Error::other(e)))?
        .map_err(|e| Self::local_io(key, e))?;
        let mut attempt = 1;
        let written = loop {
            match self.download_once(key, &object, tmp.as_file()).await {
                Ok(n) => break n,
                Err((e, true)) if attempt < DOWNLOAD_ATTEMPTS => {
                    tracing::warn!(key, attempt, error = %e, "download broke off; retrying");
                    attempt += 1;
                }
                Err((e, _)) => return Err(e),
            }
        };
        let dest = path.to_path_buf();
        tokio::task::spawn_blocking(move || tmp.persist(dest).map_err(|e| e.error))
            .await
            .map_err(|e| Self::local_io(key, std::io::Error::other(e)))?
            .map_err(|e| Self::local_io(key, e))?;
        Ok(written)
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        Ok(self.size(key).await?.is_some())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let object = self.object_key(key)?;
        let result = self
            .client()
            .await
            .head_object()
            .bucket(self.bucket())
            .key(&object)
            .send()
            .await;
        match result {
            Ok(head) => Ok(Some(head.content_length().unwrap_or(0).max(0) as u64)),
            Err(e)
                if e.as_service_error().is_some_and(|s| s.is_not_found())
                    || e.raw_response().is_some_and(|r| r.status().as_u16() == 404) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.backend(key, "checking for the object", &e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let full = format!("{}{prefix}", self.prefix);
        let mut pages = self
            .client()
            .await
            .list_objects_v2()
            .bucket(self.bucket())
            .prefix(&full)
            .into_paginator()
            .send();
        let mut keys = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.backend(prefix, "listing objects", &e))?;
            for object in page.contents() {
                if let Some(key) = object.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    keys.push(key.to_string());
                }
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let object = self.object_key(key)?;
        let result = self
            .client()
            .await
            .delete_object()
            .bucket(self.bucket())
            .key(&object)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.raw_response().is_some_and(|r| r.status().as_u16() == 404)
                    && e.code() != Some("NoSuchBucket") =>
            {
                Ok(())
            }
            Err(e) => Err(self.backend(key, "deleting the object", &e)),
        }
    }

    fn describe(&self) -> String {
        let path = format!("s3://{}/{}", self.bucket(), self.prefix);
        let path = path.trim_end_matches('/');
        match &self.config.endpoint {
            Some(endpoint) => format!("{path} at {endpoint}"),
            None => format!(
                "{path} (AWS, {})",
                self.config.region.as_deref().unwrap_or(DEFAULT_REGION)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_with_defaults_and_rejects_unknown_fields() {
        let c: S3Config = toml::from_str(r#"bucket = "toolhost""#).unwrap();
        assert_eq!(
            c,
            S3Config {
                bucket: "toolhost".into(),
                ..S3Config::default()
            }
        );
        assert!(c.path_style);
        let c: S3Config = toml::from_str(
            r#"
            bucket = "b"
            endpoint = "http://127.0.0.1:3900"
            region = "garage"
            prefix = "/team-a/"
            path_style = false
            "#,
        )
        .unwrap();
        assert_eq!(c.region.as_deref(), Some("garage"));
        let err = toml::from_str::<S3Config>("bucket = \"b\"\nendpiont = \"x\"").unwrap_err();
        assert!(err.to_string().contains("endpiont"), "{err}");
    }

    #[test]
    fn new_checks_the_config_and_keys_get_the_prefix() {
        let store = S3Store::new(S3Config {
            bucket: "b".into(),
            endpoint: Some("http://127.0.0.1:3900".into()),
            region: Some("garage".into()),
            prefix: "/team-a/".into(),
            path_style: true,
        })
        .unwrap();
        assert_eq!(
            store.object_key("runs/x/result.json").unwrap(),
            "team-a/runs/x/result.json"
        );
        assert!(matches!(
            store.object_key("../x"),
            Err(StoreError::InvalidKey(_))
        ));
        assert_eq!(store.describe(), "s3://b/team-a at http://127.0.0.1:3900");

        let plain = S3Store::new(S3Config {
            bucket: "b".into(),
            ..S3Config::default()
        })
        .unwrap();
        assert_eq!(plain.object_key("k").unwrap(), "k");
        assert_eq!(plain.describe(), "s3://b (AWS, us-east-1)");

        for bad in [
            S3Config::default(),
            S3Config {
                bucket: "b".into(),
                endpoint: Some("127.0.0.1:3900".into()),
                ..S3Config::default()
            },
            S3Config {
                bucket: "b".into(),
                prefix: "a/../b".into(),
                ..S3Config::default()
            },
        ] {
            let err = S3Store::new(bad.clone()).unwrap_err();
            assert!(err.to_string().contains("storage"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn failures_name_what_to_check() {
        assert_eq!(
            hint(Some(404), Some("NoSuchBucket"), "", false),
            Hint::Bucket
        );
        assert_eq!(
            hint(Some(403), Some("InvalidAccessKeyId"), "", false),
            Hint::Credentials
        );
        assert_eq!(hint(Some(403), None, "", false), Hint::Credentials);
        assert_eq!(
            hint(None, None, "dispatch failure: connection refused", true),
            Hint::Endpoint
        );
        assert_eq!(
            hint(
                None,
                None,
                "failed to load credentials: no providers in chain",
                true
            ),
            Hint::Credentials
        );
        assert_eq!(
            hint(Some(400), Some("AuthorizationHeaderMalformed"), "", false),
            Hint::Region
        );
        assert_eq!(hint(Some(500), None, "", false), Hint::Any);
        for h in [
            Hint::Endpoint,
            Hint::Credentials,
            Hint::Bucket,
            Hint::Region,
            Hint::Any,
        ] {
            assert!(h.text("b", "http://e").starts_with("check"));
        }
    }

    #[test]
    fn usable_as_a_shared_trait_object() {
        let store = S3Store::new(S3Config {
            bucket: "b".into(),
            ..S3Config::default()
        })
        .unwrap();
        let shared: std::sync::Arc<dyn BlobStore> = std::sync::Arc::new(store);
        assert!(shared.describe().starts_with("s3://b"));
    }
}
