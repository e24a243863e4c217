//! Where Supermark is: its database, its bucket and its own address, read
//! from the variables Supermark's own `.env` already has, so one file
//! configures both. Read once at start-up; every error names its variable.

use std::time::Duration;

use kiln_core::auth::Environment;
use kiln_storage::S3Config;

/// A variable kiln cannot use, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

fn error(variable: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        variable,
        message: message.into(),
    }
}

#[derive(Clone)]
pub struct SupermarkConfig {
    /// Supermark's database, without Prisma's own query parameters.
    pub database_url: String,
    /// Prisma's `schema` parameter, as the connection's `search_path`.
    pub schema: Option<String>,
    /// Supermark's bucket (`NEXT_PRIVATE_UPLOAD_*`).
    pub storage: S3Config,
    /// Whose keys may run Supermark's tasks (`KILN_SUPERMARK_ENVIRONMENT`,
    /// prod unless set): the tasks write Supermark's own tables and files.
    pub environment: Environment,
    /// Supermark's address as kiln reaches it, for `/api/revalidate` and
    /// `/api/jobs/…`; without it those calls are skipped.
    pub app_url: Option<String>,
    pub revalidate_token: Option<String>,
    pub internal_api_key: Option<String>,
    /// `NEXT_PUBLIC_MARKETING_URL`: the base of viewer links in dataroom
    /// notifications when a link has no custom domain.
    pub marketing_url: String,
    /// The largest upload the document tasks read.
    pub max_source_bytes: u64,
    pub ffmpeg: String,
    pub ffprobe: String,
    /// How long one video may take to encode.
    pub video_timeout: Duration,
    /// ffmpeg's address-space limit, in bytes.
    pub video_memory_limit: u64,
}

impl std::fmt::Debug for SupermarkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupermarkConfig")
            .field("schema", &self.schema)
            .field("storage", &self.storage)
            .field("app_url", &self.app_url)
            .finish_non_exhaustive()
    }
}

/// The Prisma URL parameters a Postgres driver does not know.
const PRISMA_ONLY_PARAMETERS: &[&str] = &[
    "schema",
    "pgbouncer",
    "connection_limit",
    "pool_timeout",
    "connect_timeout",
    "socket_timeout",
    "statement_cache_size",
    "sslaccept",
    "sslidentity",
    "sslpassword",
];

/// A Prisma database URL as a plain Postgres URL, and its `schema`.
pub fn postgres_url(prisma_url: &str) -> (String, Option<String>) {
    let Some((base, query)) = prisma_url.split_once('?') else {
        return (prisma_url.to_owned(), None);
    };
    let mut schema = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == "schema" {
            schema = Some(value.to_owned()).filter(|s| !s.is_empty());
        } else if !PRISMA_ONLY_PARAMETERS.contains(&name) {
            kept.push(pair);
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, schema)
}

fn http_url(variable: &'static str, value: String) -> Result<String, ConfigError> {
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(value.trim_end_matches('/').to_owned())
    } else {
        Err(error(variable, "must start with http:// or https://"))
    }
}

impl SupermarkConfig {
    /// `None` when Supermark is not configured (neither
    /// `KILN_SUPERMARK_DATABASE_URL` nor `POSTGRES_PRISMA_URL` is set).
    pub fn from_lookup(var: impl Fn(&'static str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let var = |name| var(name).filter(|v| !v.trim().is_empty());
        let Some((database_variable, prisma_url)) = var("KILN_SUPERMARK_DATABASE_URL")
            .map(|url| ("KILN_SUPERMARK_DATABASE_URL", url))
            .or_else(|| var("POSTGRES_PRISMA_URL").map(|url| ("POSTGRES_PRISMA_URL", url)))
        else {
            return Ok(None);
        };
        if !(prisma_url.starts_with("postgres://") || prisma_url.starts_with("postgresql://")) {
            return Err(error(database_variable, "must be a postgres:// or postgresql:// URL"));
        }
        let (database_url, schema) = postgres_url(&prisma_url);
        if let Some(schema) = &schema
            && !schema.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(error(
                database_variable,
                "its schema parameter must be a plain identifier",
            ));
        }

        match var("NEXT_PUBLIC_UPLOAD_TRANSPORT").as_deref() {
            None | Some("s3") => {}
            Some("vercel") => {
                return Err(error(
                    "NEXT_PUBLIC_UPLOAD_TRANSPORT",
                    "is vercel: kiln reads and writes Supermark's files in S3 only; build Supermark with s3",
                ));
            }
            Some(other) => {
                return Err(error(
                    "NEXT_PUBLIC_UPLOAD_TRANSPORT",
                    format!("{other:?} is not a transport Supermark knows; use s3"),
                ));
            }
        }
        let required = |name: &'static str| {
            var(name).ok_or_else(|| error(name, "is not set; Supermark's tasks read its uploads from this bucket"))
        };
        let endpoint = var("NEXT_PRIVATE_UPLOAD_ENDPOINT")
            .map(|url| http_url("NEXT_PRIVATE_UPLOAD_ENDPOINT", url))
            .transpose()?;
        let storage = S3Config {
            bucket: required("NEXT_PRIVATE_UPLOAD_BUCKET")?,
            endpoint,
            region: var("NEXT_PRIVATE_UPLOAD_REGION").unwrap_or_else(|| "eu-central-1".to_owned()),
            access_key_id: required("NEXT_PRIVATE_UPLOAD_ACCESS_KEY_ID")?,
            secret_access_key: required("NEXT_PRIVATE_UPLOAD_SECRET_ACCESS_KEY")?,
            // Supermark's own rule: path style only for exactly "true".
            force_path_style: var("NEXT_PRIVATE_UPLOAD_FORCE_PATH_STYLE").as_deref() == Some("true"),
            part_size: kiln_storage::DEFAULT_PART_SIZE,
            public_endpoint: None,
        };

        let app_url = match var("KILN_SUPERMARK_APP_URL") {
            Some(url) => Some(http_url("KILN_SUPERMARK_APP_URL", url)?),
            None => var("NEXTAUTH_URL")
                .map(|url| http_url("NEXTAUTH_URL", url))
                .transpose()?,
        };
        let marketing_url = match var("NEXT_PUBLIC_MARKETING_URL") {
            Some(url) => http_url("NEXT_PUBLIC_MARKETING_URL", url)?,
            None => "http://localhost:3000".to_owned(),
        };
        let number = |name: &'static str, default: u64| -> Result<u64, ConfigError> {
            var(name).map_or(Ok(default), |v| {
                v.trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| error(name, format!("{v:?} is not a positive whole number")))
            })
        };
        let environment = match var("KILN_SUPERMARK_ENVIRONMENT").as_deref() {
            None | Some("prod") => Environment::Prod,
            Some("dev") => Environment::Dev,
            Some(other) => {
                return Err(error(
                    "KILN_SUPERMARK_ENVIRONMENT",
                    format!("{other:?} is not an environment; use prod or dev"),
                ));
            }
        };
        Ok(Some(Self {
            database_url,
            schema,
            storage,
            environment,
            app_url,
            revalidate_token: var("REVALIDATE_TOKEN"),
            internal_api_key: var("INTERNAL_API_KEY"),
            marketing_url,
            max_source_bytes: number("KILN_SUPERMARK_MAX_SOURCE_MB", 2048)? << 20,
            ffmpeg: var("KILN_FFMPEG").unwrap_or_else(|| "ffmpeg".to_owned()),
            ffprobe: var("KILN_FFPROBE").unwrap_or_else(|| "ffprobe".to_owned()),
            video_timeout: Duration::from_secs(number("KILN_SUPERMARK_VIDEO_TIMEOUT_SECS", 3600)?),
            video_memory_limit: number("KILN_SUPERMARK_VIDEO_MEMORY_LIMIT_MB", 4096)? << 20,
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&'static str, &str)]) -> Result<Option<SupermarkConfig>, ConfigError> {
        let vars: HashMap<&str, String> = vars.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        SupermarkConfig::from_lookup(|name| vars.get(name).cloned())
    }

    const BUCKET: [(&str, &str); 3] = [
        ("NEXT_PRIVATE_UPLOAD_BUCKET", "supermark-documents"),
        ("NEXT_PRIVATE_UPLOAD_ACCESS_KEY_ID", "minio"),
        ("NEXT_PRIVATE_UPLOAD_SECRET_ACCESS_KEY", "minio-secret"),
    ];

    #[test]
    fn prisma_parameters_are_stripped_and_the_schema_kept() {
        assert_eq!(
            postgres_url("postgresql://s:p@postgres:5432/supermark?schema=public&pgbouncer=true&connection_limit=10"),
            (
                "postgresql://s:p@postgres:5432/supermark".to_owned(),
                Some("public".to_owned())
            )
        );
        assert_eq!(
            postgres_url("postgres://h/db?sslmode=require&schema=app&pool_timeout=5"),
            ("postgres://h/db?sslmode=require".to_owned(), Some("app".to_owned()))
        );
        assert_eq!(postgres_url("postgres://h/db"), ("postgres://h/db".to_owned(), None));
    }

    #[test]
    fn supermark_is_off_without_a_database_url() {
        assert!(matches!(config(&BUCKET), Ok(None)));
    }

    #[test]
    fn its_own_variables_configure_it() {
        let mut vars = BUCKET.to_vec();
        vars.extend([
            (
                "POSTGRES_PRISMA_URL",
                "postgresql://s@db/supermark?schema=public&pgbouncer=true",
            ),
            ("NEXTAUTH_URL", "http://supermark:3000/"),
            ("NEXT_PRIVATE_UPLOAD_FORCE_PATH_STYLE", "true"),
            ("NEXT_PUBLIC_UPLOAD_TRANSPORT", "s3"),
        ]);
        let config = config(&vars).ok().flatten().expect("configured");
        assert_eq!(config.database_url, "postgresql://s@db/supermark");
        assert_eq!(config.schema.as_deref(), Some("public"));
        assert_eq!(config.app_url.as_deref(), Some("http://supermark:3000"));
        assert_eq!(config.storage.region, "eu-central-1");
        assert!(config.storage.force_path_style);
    }

    #[test]
    fn the_vercel_transport_and_a_missing_bucket_name_their_variable() {
        let mut vars = BUCKET.to_vec();
        vars.extend([
            ("KILN_SUPERMARK_DATABASE_URL", "postgres://h/db"),
            ("NEXT_PUBLIC_UPLOAD_TRANSPORT", "vercel"),
        ]);
        let failure = config(&vars).expect_err("refused");
        assert_eq!(failure.variable, "NEXT_PUBLIC_UPLOAD_TRANSPORT");
        let failure = config(&[("KILN_SUPERMARK_DATABASE_URL", "postgres://h/db")]).expect_err("refused");
        assert_eq!(failure.variable, "NEXT_PRIVATE_UPLOAD_BUCKET");
        let failure = config(&[("POSTGRES_PRISMA_URL", "mysql://h/db")]).expect_err("refused");
        assert_eq!(failure.variable, "POSTGRES_PRISMA_URL");
    }
}
