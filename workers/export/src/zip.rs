//! A streaming ZIP writer. Each entry is written as its bytes arrive, with
//! its CRC and sizes in a data descriptor after the data, so nothing is
//! buffered whole and the output can go straight into an upload. What the
//! archive needs to stay readable past ZIP's 32-bit limits (entries of
//! 4 GiB and more, archives past 4 GiB, more than 65,534 entries) is
//! written in ZIP64 form, and only then.
//!
//! It writes; it does not read, seek or choose names (see `names`).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader, BufWriter, ReadBuf};

const LOCAL_HEADER: u32 = 0x0403_4b50;
const DATA_DESCRIPTOR: u32 = 0x0807_4b50;
const CENTRAL_HEADER: u32 = 0x0201_4b50;
const ZIP64_END: u32 = 0x0606_4b50;
const ZIP64_LOCATOR: u32 = 0x0706_4b50;
const END: u32 = 0x0605_4b50;
const ZIP64_EXTRA: u16 = 0x0001;
/// Sizes are in the data descriptor; names are UTF-8.
const FLAGS: u16 = 0x0008 | 0x0800;
const VERSION_DEFAULT: u16 = 20;
const VERSION_ZIP64: u16 = 45;
/// Made on Unix, so the external attributes are Unix permissions.
const MADE_BY: u16 = (3 << 8) | VERSION_ZIP64;
const REGULAR_FILE_0644: u32 = 0o100_644 << 16;
/// Entries this large or larger get ZIP64 sizes in their local header and
/// descriptor; a deflated entry can come out a little larger than its
/// input, so the cut is well below 4 GiB.
const ZIP64_ENTRY_FROM: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Copied as is: for files that are compressed already (PDF, images,
    /// office documents, archives).
    Stored,
    Deflated,
}

impl Method {
    fn code(self) -> u16 {
        match self {
            Method::Stored => 0,
            Method::Deflated => 8,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    #[error("reading the entry {name}: {source}")]
    Source { name: String, source: std::io::Error },
    #[error("writing the archive: {0}")]
    Output(std::io::Error),
    #[error("the entry name {0:?} is longer than 65,535 bytes")]
    NameTooLong(String),
}

/// A DOS date and time, ZIP's timestamp.
#[derive(Debug, Clone, Copy)]
pub struct DosTime {
    time: u16,
    date: u16,
}

impl DosTime {
    pub fn from_utc(at: chrono::DateTime<chrono::Utc>) -> Self {
        use chrono::{Datelike, Timelike};
        // DOS dates start in 1980 and end in 2107.
        let year = at.year().clamp(1980, 2107);
        Self {
            time: ((at.hour() as u16) << 11) | ((at.minute() as u16) << 5) | (at.second() as u16 / 2),
            date: (((year - 1980) as u16) << 9) | ((at.month() as u16) << 5) | at.day() as u16,
        }
    }
}

/// What the central directory keeps of an entry: a few dozen bytes besides
/// its name.
struct CentralEntry {
    name: String,
    method: Method,
    crc: u32,
    compressed: u64,
    uncompressed: u64,
    offset: u64,
    zip64_local: bool,
}

pub struct ZipWriter<W: AsyncWrite + Unpin> {
    out: BufWriter<W>,
    written: u64,
    entries: Vec<CentralEntry>,
    modified: DosTime,
}

impl<W: AsyncWrite + Unpin> ZipWriter<W> {
    /// Every entry gets the timestamp `modified`.
    pub fn new(out: W, modified: DosTime) -> Self {
        Self {
            out: BufWriter::with_capacity(256 * 1024, out),
            written: 0,
            entries: Vec::new(),
            modified,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes one entry from `source` to its end. `size_hint` is the
    /// source's size if known; entries of 2 GiB or more get ZIP64 sizes.
    pub async fn add_entry<R: AsyncRead + Unpin>(
        &mut self,
        name: &str,
        source: R,
        method: Method,
        size_hint: u64,
    ) -> Result<(), ZipError> {
        let name_len = u16::try_from(name.len()).map_err(|_| ZipError::NameTooLong(name.to_owned()))?;
        let zip64_local = size_hint >= ZIP64_ENTRY_FROM;
        let offset = self.written;

        let mut header = Vec::with_capacity(30 + name.len() + 20);
        put_u32(&mut header, LOCAL_HEADER);
        put_u16(&mut header, if zip64_local { VERSION_ZIP64 } else { VERSION_DEFAULT });
        put_u16(&mut header, FLAGS);
        put_u16(&mut header, method.code());
        put_u16(&mut header, self.modified.time);
        put_u16(&mut header, self.modified.date);
        put_u32(&mut header, 0); // CRC: in the descriptor
        let unknown_size = if zip64_local { u32::MAX } else { 0 };
        put_u32(&mut header, unknown_size);
        put_u32(&mut header, unknown_size);
        put_u16(&mut header, name_len);
        put_u16(&mut header, if zip64_local { 20 } else { 0 });
        header.extend_from_slice(name.as_bytes());
        if zip64_local {
            put_u16(&mut header, ZIP64_EXTRA);
            put_u16(&mut header, 16);
            put_u64(&mut header, 0);
            put_u64(&mut header, 0);
        }
        self.write(&header).await?;

        let mut checked = Crc32Reader::new(source);
        let compressed = match method {
            Method::Stored => self.copy_from(&mut checked, name).await?,
            Method::Deflated => {
                let mut encoder = async_compression::tokio::bufread::DeflateEncoder::new(BufReader::with_capacity(
                    64 * 1024,
                    &mut checked,
                ));
                self.copy_from(&mut encoder, name).await?
            }
        };
        let (crc, uncompressed) = checked.finish();

        let mut descriptor = Vec::with_capacity(24);
        put_u32(&mut descriptor, DATA_DESCRIPTOR);
        put_u32(&mut descriptor, crc);
        if zip64_local {
            put_u64(&mut descriptor, compressed);
            put_u64(&mut descriptor, uncompressed);
        } else if compressed >= u64::from(u32::MAX) || uncompressed >= u64::from(u32::MAX) {
            // The size hint was wrong by gigabytes; the local header has
            // no room for these sizes.
            return Err(ZipError::Source {
                name: name.to_owned(),
                source: std::io::Error::other("the source grew past 4 GiB beyond its announced size"),
            });
        } else {
            put_u32(&mut descriptor, compressed as u32);
            put_u32(&mut descriptor, uncompressed as u32);
        }
        self.write(&descriptor).await?;

        self.entries.push(CentralEntry {
            name: name.to_owned(),
            method,
            crc,
            compressed,
            uncompressed,
            offset,
            zip64_local,
        });
        Ok(())
    }

    /// Writes the central directory and the end records, flushes, and
    /// answers the archive's size.
    pub async fn finish(mut self) -> Result<u64, ZipError> {
        let directory_offset = self.written;
        let entries = std::mem::take(&mut self.entries);
        for entry in &entries {
            let record = central_record(entry, self.modified);
            self.write(&record).await?;
        }
        let directory_size = self.written - directory_offset;
        let count = entries.len() as u64;

        let mut end = Vec::with_capacity(98);
        let needs_zip64 = count >= u64::from(u16::MAX)
            || directory_offset >= u64::from(u32::MAX)
            || directory_size >= u64::from(u32::MAX);
        if needs_zip64 {
            let zip64_end_offset = self.written;
            put_u32(&mut end, ZIP64_END);
            put_u64(&mut end, 44); // the record's size after this field
            put_u16(&mut end, MADE_BY);
            put_u16(&mut end, VERSION_ZIP64);
            put_u32(&mut end, 0); // this disk
            put_u32(&mut end, 0); // the directory's disk
            put_u64(&mut end, count);
            put_u64(&mut end, count);
            put_u64(&mut end, directory_size);
            put_u64(&mut end, directory_offset);
            put_u32(&mut end, ZIP64_LOCATOR);
            put_u32(&mut end, 0);
            put_u64(&mut end, zip64_end_offset);
            put_u32(&mut end, 1); // disks in all
        }
        put_u32(&mut end, END);
        put_u16(&mut end, 0);
        put_u16(&mut end, 0);
        // Without ZIP64 the count is below 65,535.
        let count16 = if needs_zip64 { u16::MAX } else { count as u16 };
        put_u16(&mut end, count16);
        put_u16(&mut end, count16);
        put_u32(&mut end, clamp32(directory_size, needs_zip64));
        put_u32(&mut end, clamp32(directory_offset, needs_zip64));
        put_u16(&mut end, 0); // no comment
        self.write(&end).await?;
        self.out.flush().await.map_err(ZipError::Output)?;
        self.out.shutdown().await.map_err(ZipError::Output)?;
        Ok(self.written)
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), ZipError> {
        self.out.write_all(bytes).await.map_err(ZipError::Output)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Copies `source` to the output; answers the bytes copied.
    async fn copy_from<R: AsyncRead + Unpin>(&mut self, source: &mut R, name: &str) -> Result<u64, ZipError> {
        use tokio::io::AsyncReadExt;
        let mut buffer = vec![0u8; 64 * 1024];
        let mut copied = 0u64;
        loop {
            let n = source.read(&mut buffer).await.map_err(|source| ZipError::Source {
                name: name.to_owned(),
                source,
            })?;
            if n == 0 {
                return Ok(copied);
            }
            self.write(&buffer[..n]).await?;
            copied += n as u64;
        }
    }
}

/// In a full archive's end record, a value that does not fit is all ones
/// and the ZIP64 record holds it.
fn clamp32(value: u64, zip64: bool) -> u32 {
    if zip64 { u32::MAX } else { value as u32 }
}

fn central_record(entry: &CentralEntry, modified: DosTime) -> Vec<u8> {
    let large_uncompressed = entry.uncompressed >= u64::from(u32::MAX);
    let large_compressed = entry.compressed >= u64::from(u32::MAX);
    let large_offset = entry.offset >= u64::from(u32::MAX);
    let mut extra = Vec::new();
    if large_uncompressed || large_compressed || large_offset {
        let mut fields = Vec::new();
        if large_uncompressed {
            put_u64(&mut fields, entry.uncompressed);
        }
        if large_compressed {
            put_u64(&mut fields, entry.compressed);
        }
        if large_offset {
            put_u64(&mut fields, entry.offset);
        }
        put_u16(&mut extra, ZIP64_EXTRA);
        put_u16(&mut extra, fields.len() as u16);
        extra.extend_from_slice(&fields);
    }
    let zip64 = entry.zip64_local || !extra.is_empty();
    let mut record = Vec::with_capacity(46 + entry.name.len() + extra.len());
    put_u32(&mut record, CENTRAL_HEADER);
    put_u16(&mut record, MADE_BY);
    put_u16(&mut record, if zip64 { VERSION_ZIP64 } else { VERSION_DEFAULT });
    put_u16(&mut record, FLAGS);
    put_u16(&mut record, entry.method.code());
    put_u16(&mut record, modified.time);
    put_u16(&mut record, modified.date);
    put_u32(&mut record, entry.crc);
    put_u32(
        &mut record,
        if large_compressed {
            u32::MAX
        } else {
            entry.compressed as u32
        },
    );
    put_u32(
        &mut record,
        if large_uncompressed {
            u32::MAX
        } else {
            entry.uncompressed as u32
        },
    );
    put_u16(&mut record, entry.name.len() as u16);
    put_u16(&mut record, extra.len() as u16);
    put_u16(&mut record, 0); // comment
    put_u16(&mut record, 0); // disk
    put_u16(&mut record, 0); // internal attributes
    put_u32(&mut record, REGULAR_FILE_0644);
    put_u32(&mut record, if large_offset { u32::MAX } else { entry.offset as u32 });
    record.extend_from_slice(entry.name.as_bytes());
    record.extend_from_slice(&extra);
    record
}

fn put_u16(buffer: &mut Vec<u8>, value: u16) {
    buffer.extend_from_slice(&value.to_le_bytes());
}

fn put_u32(buffer: &mut Vec<u8>, value: u32) {
    buffer.extend_from_slice(&value.to_le_bytes());
}

fn put_u64(buffer: &mut Vec<u8>, value: u64) {
    buffer.extend_from_slice(&value.to_le_bytes());
}

/// Passes bytes through, keeping their CRC-32 and count.
struct Crc32Reader<R> {
    inner: R,
    hasher: crc32fast::Hasher,
    count: u64,
}

impl<R> Crc32Reader<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: crc32fast::Hasher::new(),
            count: 0,
        }
    }

    fn finish(self) -> (u32, u64) {
        (self.hasher.finalize(), self.count)
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Crc32Reader<R> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            let fresh = &buf.filled()[before..];
            self.hasher.update(fresh);
            self.count += fresh.len() as u64;
        }
        polled
    }
}
