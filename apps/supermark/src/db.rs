//! Supermark's tables, read and written as Prisma would: ids made by the
//! writer (cuid), `updatedAt` set on every write, timestamps in UTC with
//! millisecond precision, JSON stored as JSONB, and an existing page row
//! kept as it is. Everything a task writes for one outcome is written in
//! one transaction, so a failed run leaves nothing half-written.

use std::str::FromStr;

use chrono::{NaiveDateTime, Timelike, Utc};
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Row};

use crate::config::SupermarkConfig;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("Supermark's database URL is not valid: {0}")]
    Url(sqlx::Error),
    #[error("Supermark's database: {0}")]
    Query(#[from] sqlx::Error),
    #[error("Supermark's database lacks {0}")]
    MissingSchema(String),
}

impl DbError {
    /// Connection trouble passes; a bad statement or schema does not.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            DbError::Query(sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
        ) || matches!(self, DbError::Query(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c.starts_with("08") || c.starts_with("57P")))
    }
}

/// A `DocumentPage` row to create.
#[derive(Debug, Clone)]
pub struct NewPage {
    pub page_number: i32,
    pub file: String,
    pub page_links: Value,
    pub metadata: Value,
}

/// A version whose pages are to be made.
#[derive(Debug, Clone)]
pub struct PdfVersion {
    pub document_id: String,
    pub team_id: String,
    pub file: String,
    pub storage_type: String,
    /// Page rows it has already (a rerun keeps them).
    pub existing_pages: i64,
}

/// A version whose upload is to be converted.
#[derive(Debug, Clone)]
pub struct ConversionSource {
    pub document_name: String,
    pub original_file: String,
    pub content_type: String,
    pub storage_type: String,
}

/// A viewer of a dataroom and the link of their latest verified visit.
#[derive(Debug, Clone)]
pub struct DataroomViewer {
    pub viewer_id: String,
    pub notification_preferences: Option<Value>,
    pub link: Option<ViewerLink>,
}

#[derive(Debug, Clone)]
pub struct ViewerLink {
    pub id: String,
    pub slug: Option<String>,
    pub domain_slug: Option<String>,
    pub domain_id: Option<String>,
    pub is_archived: bool,
    pub expires_at: Option<NaiveDateTime>,
}

/// Now, as Prisma writes it: UTC, to the millisecond.
fn now() -> NaiveDateTime {
    let now = Utc::now().naive_utc();
    now.with_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(now)
}

/// The tables and columns the tasks use, for `kiln doctor`.
const REQUIRED_COLUMNS: &[(&str, &[&str])] = &[
    ("Team", &["id", "plan", "updatedAt"]),
    ("Document", &["id", "name", "teamId"]),
    (
        "DocumentVersion",
        &[
            "id",
            "versionNumber",
            "documentId",
            "file",
            "originalFile",
            "type",
            "contentType",
            "storageType",
            "numPages",
            "isPrimary",
            "isVertical",
            "hasPages",
            "length",
            "updatedAt",
        ],
    ),
    (
        "DocumentPage",
        &[
            "id",
            "versionId",
            "pageNumber",
            "pageLinks",
            "metadata",
            "file",
            "storageType",
            "createdAt",
            "updatedAt",
        ],
    ),
];

#[derive(Debug, Clone)]
pub struct SupermarkDb {
    pool: PgPool,
}

impl SupermarkDb {
    /// Connects when first used, so kiln starts while Supermark's database
    /// is still coming up.
    pub fn connect_lazy(config: &SupermarkConfig) -> Result<Self, DbError> {
        let mut options = PgConnectOptions::from_str(&config.database_url).map_err(DbError::Url)?;
        if let Some(schema) = &config.schema {
            options = options.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(std::time::Duration::from_secs(10))
            .connect_lazy_with(options);
        Ok(Self { pool })
    }

    /// Every table and column the tasks use is there.
    pub async fn check_schema(&self) -> Result<(), DbError> {
        let rows = sqlx::query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = ANY($1)",
        )
        .bind(REQUIRED_COLUMNS.iter().map(|(t, _)| *t).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await?;
        let present: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut missing = Vec::new();
        for (table, columns) in REQUIRED_COLUMNS {
            if !present.iter().any(|(t, _)| t == table) {
                missing.push(format!("the table \"{table}\""));
                continue;
            }
            for column in *columns {
                if !present.iter().any(|(t, c)| t == table && c == column) {
                    missing.push(format!("\"{table}\".\"{column}\""));
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(DbError::MissingSchema(missing.join(", ")))
        }
    }

    /// The version to make pages of, if it belongs to `document_id` of
    /// `team_id`.
    pub async fn pdf_version(
        &self,
        version_id: &str,
        document_id: &str,
        team_id: &str,
    ) -> Result<Option<PdfVersion>, DbError> {
        let row = sqlx::query(
            r#"SELECT v.file, v."storageType"::text,
                      (SELECT count(*) FROM "DocumentPage" p WHERE p."versionId" = v.id)
               FROM "DocumentVersion" v JOIN "Document" d ON d.id = v."documentId"
               WHERE v.id = $1 AND d.id = $2 AND d."teamId" = $3"#,
        )
        .bind(version_id)
        .bind(document_id)
        .bind(team_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|row| PdfVersion {
            document_id: document_id.to_owned(),
            team_id: team_id.to_owned(),
            file: row.get(0),
            storage_type: row.get(1),
            existing_pages: row.get(2),
        }))
    }

    /// Records a version's pages: new page rows (an existing row for a
    /// page number is kept), `numPages`, `hasPages`, `isPrimary`,
    /// `isVertical`, and, when `version_number` is given, every other
    /// version of the document no longer primary. All or nothing.
    pub async fn record_pages(
        &self,
        version_id: &str,
        document_id: &str,
        version_number: Option<i64>,
        is_vertical: bool,
        pages: &[NewPage],
    ) -> Result<(), DbError> {
        let now = now();
        let mut tx = self.pool.begin().await?;
        let ids: Vec<String> = pages.iter().map(|_| cuid::cuid1()).collect();
        let numbers: Vec<i32> = pages.iter().map(|p| p.page_number).collect();
        let files: Vec<&str> = pages.iter().map(|p| p.file.as_str()).collect();
        let links: Vec<Value> = pages.iter().map(|p| p.page_links.clone()).collect();
        let metadata: Vec<Value> = pages.iter().map(|p| p.metadata.clone()).collect();
        sqlx::query(
            r#"INSERT INTO "DocumentPage"
                 (id, "versionId", "pageNumber", "pageLinks", metadata, file, "storageType", "createdAt", "updatedAt")
               SELECT p.id, $1, p.number, p.links, p.metadata, p.file, 'S3_PATH', $7, $7
               FROM UNNEST($2::text[], $3::int[], $4::jsonb[], $5::jsonb[], $6::text[])
                 AS p(id, number, links, metadata, file)
               ON CONFLICT ("pageNumber", "versionId") DO NOTHING"#,
        )
        .bind(version_id)
        .bind(&ids)
        .bind(&numbers)
        .bind(&links)
        .bind(&metadata)
        .bind(&files)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let updated = sqlx::query(
            r#"UPDATE "DocumentVersion"
               SET "numPages" = $2, "hasPages" = true, "isPrimary" = true, "isVertical" = $3, "updatedAt" = $4
               WHERE id = $1"#,
        )
        .bind(version_id)
        .bind(i32::try_from(pages.len()).unwrap_or(i32::MAX))
        .bind(is_vertical)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            return Err(DbError::Query(sqlx::Error::RowNotFound));
        }
        if let Some(number) = version_number.filter(|n| *n != 0) {
            sqlx::query(
                r#"UPDATE "DocumentVersion" SET "isPrimary" = false, "updatedAt" = $3
                   WHERE "documentId" = $1 AND "versionNumber" <> $2"#,
            )
            .bind(document_id)
            .bind(i32::try_from(number).unwrap_or(i32::MAX))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn team_exists(&self, team_id: &str) -> Result<bool, DbError> {
        let found = sqlx::query(r#"SELECT 1 FROM "Team" WHERE id = $1"#)
            .bind(team_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    /// The upload to convert; `None` when the document, the version, its
    /// original file or its content type is missing.
    pub async fn conversion_source(
        &self,
        team_id: &str,
        document_id: &str,
        version_id: &str,
    ) -> Result<Option<ConversionSource>, DbError> {
        let row = sqlx::query(
            r#"SELECT d.name, v."originalFile", v."contentType", v."storageType"::text
               FROM "Document" d JOIN "DocumentVersion" v ON v."documentId" = d.id
               WHERE d.id = $1 AND d."teamId" = $2 AND v.id = $3"#,
        )
        .bind(document_id)
        .bind(team_id)
        .bind(version_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|row| {
            Some(ConversionSource {
                document_name: row.get(0),
                original_file: row.get::<Option<String>, _>(1)?,
                content_type: row.get::<Option<String>, _>(2)?,
                storage_type: row.get(3),
            })
        }))
    }

    /// The converted PDF becomes the version's file; answers its number.
    pub async fn set_converted_file(&self, version_id: &str, key: &str) -> Result<i64, DbError> {
        let row = sqlx::query(
            r#"UPDATE "DocumentVersion" SET file = $2, type = 'pdf', "storageType" = 'S3_PATH', "updatedAt" = $3
               WHERE id = $1 RETURNING "versionNumber""#,
        )
        .bind(version_id)
        .bind(key)
        .bind(now())
        .fetch_optional(&self.pool)
        .await?
        .ok_or(DbError::Query(sqlx::Error::RowNotFound))?;
        Ok(i64::from(row.get::<i32, _>(0)))
    }

    /// Whether the version exists.
    pub async fn version_exists(&self, version_id: &str) -> Result<bool, DbError> {
        let found = sqlx::query(r#"SELECT 1 FROM "DocumentVersion" WHERE id = $1"#)
            .bind(version_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.is_some())
    }

    pub async fn set_video_length(&self, version_id: &str, seconds: i32) -> Result<(), DbError> {
        sqlx::query(r#"UPDATE "DocumentVersion" SET length = $2, "updatedAt" = $3 WHERE id = $1"#)
            .bind(version_id)
            .bind(seconds)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn set_video_file(&self, version_id: &str, key: &str) -> Result<(), DbError> {
        sqlx::query(r#"UPDATE "DocumentVersion" SET file = $2, "updatedAt" = $3 WHERE id = $1"#)
            .bind(version_id)
            .bind(key)
            .bind(now())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The team's viewers with a verified visit of the dataroom, each with
    /// the link of their latest such visit.
    pub async fn dataroom_viewers(&self, team_id: &str, dataroom_id: &str) -> Result<Vec<DataroomViewer>, DbError> {
        let rows = sqlx::query(
            r#"SELECT DISTINCT ON (viewer.id)
                      viewer.id, viewer."notificationPreferences",
                      link.id, link.slug, link."domainSlug", link."domainId", link."isArchived", link."expiresAt"
               FROM "Viewer" viewer
               JOIN "View" view ON view."viewerId" = viewer.id AND view."dataroomId" = $2
                                AND view."viewType"::text = 'DATAROOM_VIEW' AND view.verified
               LEFT JOIN "Link" link ON link.id = view."linkId"
               WHERE viewer."teamId" = $1
               ORDER BY viewer.id, view."viewedAt" DESC"#,
        )
        .bind(team_id)
        .bind(dataroom_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| DataroomViewer {
                viewer_id: row.get(0),
                notification_preferences: row.get(1),
                link: row.get::<Option<String>, _>(2).map(|id| ViewerLink {
                    id,
                    slug: row.get(3),
                    domain_slug: row.get(4),
                    domain_id: row.get(5),
                    is_archived: row.get(6),
                    expires_at: row.get(7),
                }),
            })
            .collect())
    }
}
