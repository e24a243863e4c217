//! The S3-compatible backend (AWS S3, MinIO), through aws-sdk-s3.
//!
//! An upload reads its body a part at a time: a body that fits in one part
//! is a single PutObject, a longer one a multipart upload whose parts are
//! sent as they fill, so memory stays at one part whatever the size. A
//! failed multipart upload is aborted, so no partial object is left.

use std::time::{Duration, SystemTime};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use tokio::io::AsyncReadExt;

use crate::{ByteReader, ObjectBody, ObjectInfo, ObjectKey, ObjectStore, PresignedUrl, StorageError};

/// S3 parts must be at least 5 MiB (but the last).
pub const DEFAULT_PART_SIZE: usize = 8 * 1024 * 1024;
/// SigV4 presigned links last at most a week.
pub const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    /// `None` for AWS itself; MinIO's address otherwise.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// Bucket in the path (`host/bucket/key`), as MinIO expects, rather than
    /// in the host name.
    pub force_path_style: bool,
    pub part_size: usize,
    /// The address download links should name when it differs from
    /// `endpoint`: kiln reaches MinIO as `http://minio:9000` inside a
    /// compose network, a browser as `https://files.example.com`.
    pub public_endpoint: Option<String>,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field("public_endpoint", &self.public_endpoint)
            .finish_non_exhaustive()
    }
}

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    /// Signs download links (an offline computation) for the public
    /// endpoint; the same client when there is none.
    presigner: Client,
    bucket: String,
    part_size: usize,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl S3Store {
    pub fn new(config: &S3Config) -> Result<Self, StorageError> {
        if config.part_size < 5 * 1024 * 1024 {
            return Err(StorageError::Config("S3 parts must be at least 5 MiB".into()));
        }
        let http_client = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let credentials = Credentials::new(
            &config.access_key_id,
            &config.secret_access_key,
            None,
            None,
            "kiln-config",
        );
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(credentials)
            .http_client(http_client)
            .force_path_style(config.force_path_style)
            // MinIO and other S3-compatible servers do not all take the
            // newer default checksums; send and check them only where S3
            // requires them.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        let presigner = match &config.public_endpoint {
            Some(public) => Client::from_conf(builder.clone().endpoint_url(public).build()),
            None => match &config.endpoint {
                Some(endpoint) => Client::from_conf(builder.clone().endpoint_url(endpoint).build()),
                None => Client::from_conf(builder.clone().build()),
            },
        };
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(builder.build()),
            presigner,
            bucket: config.bucket.clone(),
            part_size: config.part_size,
        })
    }

    /// Creates the bucket if it does not exist (for tests and `kiln dev`).
    pub async fn ensure_bucket(&self) -> Result<(), StorageError> {
        if self.client.head_bucket().bucket(&self.bucket).send().await.is_ok() {
            return Ok(());
        }
        self.client
            .create_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| backend("CreateBucket", &self.bucket, e))?;
        Ok(())
    }

    async fn put_multipart(
        &self,
        key: &ObjectKey,
        first_part: Vec<u8>,
        body: &mut ByteReader<'_>,
        content_type: &str,
    ) -> Result<u64, StorageError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type(content_type)
            .send()
            .await
            .map_err(|e| backend("CreateMultipartUpload", key.as_str(), e))?;
        let upload_id = created.upload_id().ok_or_else(|| StorageError::Backend {
            operation: "CreateMultipartUpload",
            key: key.to_string(),
            message: "the answer has no upload id".into(),
            status: None,
        })?;
        let uploaded = self.upload_parts(key, upload_id, first_part, body).await;
        let completed = match uploaded {
            Ok((parts, size)) => self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(upload_id)
                .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
                .send()
                .await
                .map(|_| size)
                .map_err(|e| backend("CompleteMultipartUpload", key.as_str(), e)),
            Err(error) => Err(error),
        };
        if completed.is_err() {
            // The upload failed already; aborting frees the parts stored so
            // far. If the abort fails too, the bucket's lifecycle rule for
            // incomplete uploads is the last resort.
            if let Err(error) = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(upload_id)
                .send()
                .await
            {
                tracing::warn!(key = %key, error = %backend("AbortMultipartUpload", key.as_str(), error), "cannot abort an upload");
            }
        }
        completed
    }

    async fn upload_parts(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        first_part: Vec<u8>,
        body: &mut ByteReader<'_>,
    ) -> Result<(Vec<CompletedPart>, u64), StorageError> {
        let mut parts = Vec::new();
        let mut size = 0u64;
        let mut part = first_part;
        loop {
            let part_number = i32::try_from(parts.len() + 1).unwrap_or(i32::MAX);
            if part_number > 10_000 {
                return Err(StorageError::TooLarge {
                    key: key.to_string(),
                    size,
                    limit: size,
                });
            }
            size += part.len() as u64;
            let answer = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key.as_str())
                .upload_id(upload_id)
                .part_number(part_number)
                .body(ByteStream::from(part))
                .send()
                .await
                .map_err(|e| backend("UploadPart", key.as_str(), e))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(part_number)
                    .set_e_tag(answer.e_tag().map(str::to_owned))
                    .build(),
            );
            part = read_part(body, self.part_size, key).await?;
            if part.is_empty() {
                return Ok((parts, size));
            }
        }
    }
}

/// Reads up to `size` bytes: fewer only at the end of the body.
async fn read_part(body: &mut ByteReader<'_>, size: usize, key: &ObjectKey) -> Result<Vec<u8>, StorageError> {
    let mut part = Vec::with_capacity(size);
    let mut limited = body.take(size as u64);
    limited
        .read_to_end(&mut part)
        .await
        .map_err(|e| StorageError::io(key.as_str(), e))?;
    Ok(part)
}

fn backend<E, R>(operation: &'static str, key: &str, error: SdkError<E, R>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus,
{
    let status = error.raw_response().map(HasStatus::status);
    let message = match &error {
        SdkError::ServiceError(service) => {
            let inner = service.err();
            match (inner.code(), inner.message()) {
                (Some(code), Some(message)) => format!("{code}: {message}"),
                (Some(code), None) => code.to_owned(),
                _ => format!("HTTP {}", status.unwrap_or_default()),
            }
        }
        other => format!("{}", aws_sdk_s3::error::DisplayErrorContext(other)),
    };
    if status == Some(404) {
        return StorageError::NotFound { key: key.to_owned() };
    }
    StorageError::Backend {
        operation,
        key: key.to_owned(),
        message,
        status,
    }
}

/// The HTTP status of an SDK error's raw response.
trait HasStatus {
    fn status(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status(&self) -> u16 {
        self.status().as_u16()
    }
}

#[async_trait::async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &ObjectKey, mut body: ByteReader<'_>, content_type: &str) -> Result<u64, StorageError> {
        let first = read_part(&mut body, self.part_size, key).await?;
        if first.len() < self.part_size {
            let size = first.len() as u64;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key.as_str())
                .content_type(content_type)
                .body(ByteStream::from(first))
                .send()
                .await
                .map_err(|e| backend("PutObject", key.as_str(), e))?;
            return Ok(size);
        }
        self.put_multipart(key, first, &mut body, content_type).await
    }

    async fn get(&self, key: &ObjectKey) -> Result<ObjectBody, StorageError> {
        let answer = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| backend("GetObject", key.as_str(), e))?;
        Ok(ObjectBody {
            size: answer.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            content_type: answer.content_type().map(str::to_owned),
            reader: Box::pin(answer.body.into_async_read()),
        })
    }

    async fn head(&self, key: &ObjectKey) -> Result<ObjectInfo, StorageError> {
        let answer = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| backend("HeadObject", key.as_str(), e))?;
        Ok(ObjectInfo {
            key: key.to_string(),
            size: answer.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
            modified: answer.last_modified().and_then(system_time),
        })
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| backend("DeleteObject", key.as_str(), e))
        {
            Ok(_) | Err(StorageError::NotFound { .. }) => Ok(()),
            Err(error) => Err(error),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StorageError> {
        let mut found = Vec::new();
        let mut continuation: Option<String> = None;
        loop {
            let answer = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(prefix)
                .set_continuation_token(continuation.take())
                .send()
                .await
                .map_err(|e| backend("ListObjectsV2", prefix, e))?;
            for object in answer.contents() {
                if let Some(key) = object.key() {
                    found.push(ObjectInfo {
                        key: key.to_owned(),
                        size: object.size().and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
                        modified: object.last_modified().and_then(system_time),
                    });
                }
            }
            match answer.next_continuation_token() {
                Some(token) if answer.is_truncated() == Some(true) => continuation = Some(token.to_owned()),
                _ => break,
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn presign_get(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
        now: SystemTime,
    ) -> Result<PresignedUrl, StorageError> {
        let presigning = presigning(expires_in, now)?;
        let request = self
            .presigner
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .presigned(presigning)
            .await
            .map_err(|e| backend("PresignGetObject", key.as_str(), e))?;
        Ok(PresignedUrl {
            url: request.uri().to_owned(),
            expires_at: now + expires_in,
        })
    }

    async fn presign_put(
        &self,
        key: &ObjectKey,
        expires_in: Duration,
        now: SystemTime,
    ) -> Result<PresignedUrl, StorageError> {
        let presigning = presigning(expires_in, now)?;
        let request = self
            .presigner
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .presigned(presigning)
            .await
            .map_err(|e| backend("PresignPutObject", key.as_str(), e))?;
        Ok(PresignedUrl {
            url: request.uri().to_owned(),
            expires_at: now + expires_in,
        })
    }
}

fn presigning(expires_in: Duration, now: SystemTime) -> Result<PresigningConfig, StorageError> {
    if expires_in > MAX_PRESIGN {
        return Err(StorageError::Config(format!(
            "S3 links last at most 7 days, not {}s",
            expires_in.as_secs()
        )));
    }
    PresigningConfig::builder()
        .start_time(now)
        .expires_in(expires_in)
        .build()
        .map_err(|e| StorageError::Config(e.to_string()))
}

/// An S3 date as a `SystemTime`.
fn system_time(at: &aws_sdk_s3::primitives::DateTime) -> Option<SystemTime> {
    let seconds = u64::try_from(at.secs()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_nanos(u64::from(at.subsec_nanos())))
}
