//! A rendered page to an image file: encoded as PNG and as JPEG (quality
//! 80), the smaller kept, as Papermark does. Pure: bytes in, bytes out.
//!
//! Two shortcuts keep the result identical while doing less work:
//! - a page with no colour (every pixel grey, as most text pages are) is
//!   encoded with one channel instead of three, both as PNG and as JPEG;
//! - the JPEG encoder stops as soon as its output passes the PNG's size,
//!   since it could then only lose the comparison.

use std::io::Write;

/// JPEG quality, as Papermark encodes its pages.
pub const JPEG_QUALITY: u8 = 80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ImageFormat {
    Png,
    Jpeg,
}

impl ImageFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            ImageFormat::Png => "image/png",
            ImageFormat::Jpeg => "image/jpeg",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Jpeg => "jpg",
        }
    }
}

/// The chosen encoding of one page, and what the other one weighed.
#[derive(Debug)]
pub struct EncodedPage {
    pub format: ImageFormat,
    pub bytes: Vec<u8>,
    /// `None` when the PNG was abandoned for being larger than the JPEG.
    pub png_size: Option<usize>,
    /// `None` when the JPEG was abandoned for being larger than the PNG.
    pub jpeg_size: Option<usize>,
    pub grayscale: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("the bitmap holds {got} bytes, not {expected} for {width} × {height} BGRA")]
    WrongBufferSize {
        got: usize,
        expected: usize,
        width: u32,
        height: u32,
    },
    #[error("page too large to encode as JPEG ({width} × {height})")]
    TooLargeForJpeg { width: u32, height: u32 },
    #[error("PNG encoding failed: {0}")]
    Png(#[from] png::EncodingError),
    #[error("JPEG encoding failed: {0}")]
    Jpeg(jpeg_encoder::EncodingError),
}

/// Pixels converted once for both encoders.
struct Pixels {
    data: Vec<u8>,
    grayscale: bool,
}

/// Converts BGRA (pdfium's layout) to one grey channel when no pixel has
/// colour, else to RGB. `scratch` is reused between pages.
fn convert(bgra: &[u8], mut scratch: Vec<u8>) -> Pixels {
    let pixels = bgra.len() / 4;
    let colourless = bgra.chunks_exact(4).all(|p| p[0] == p[1] && p[1] == p[2]);
    // Sized once and written in place: a loop the compiler vectorizes,
    // where pushing pixel by pixel cost a sixth of a page's time.
    // Four pixels a step (fixed-size arrays), so the moves become shuffles.
    if colourless {
        scratch.resize(pixels, 0);
        let (out_quads, out_rest) = scratch.as_chunks_mut::<4>();
        let (in_quads, in_rest) = bgra.as_chunks::<16>();
        for (grey, p) in out_quads.iter_mut().zip(in_quads) {
            *grey = [p[0], p[4], p[8], p[12]];
        }
        for (grey, p) in out_rest.iter_mut().zip(in_rest.chunks_exact(4)) {
            *grey = p[0];
        }
    } else {
        scratch.resize(pixels * 3, 0);
        let (out_quads, out_rest) = scratch.as_chunks_mut::<12>();
        let (in_quads, in_rest) = bgra.as_chunks::<16>();
        for (rgb, p) in out_quads.iter_mut().zip(in_quads) {
            *rgb = [
                p[2], p[1], p[0], p[6], p[5], p[4], p[10], p[9], p[8], p[14], p[13], p[12],
            ];
        }
        for (rgb, p) in out_rest.chunks_exact_mut(3).zip(in_rest.chunks_exact(4)) {
            rgb.copy_from_slice(&[p[2], p[1], p[0]]);
        }
    }
    Pixels {
        data: scratch,
        grayscale: colourless,
    }
}

/// Encodes a `width` × `height` BGRA bitmap (stride `width * 4`) and keeps
/// the smaller of PNG and JPEG; a tie keeps the PNG, which is lossless.
///
/// `likely` is the format expected to win (the previous page's, pages of a
/// document being alike): it is encoded whole, and the other stops as soon
/// as it passes it. The choice is the same either way; only the work done
/// for the loser shrinks.
pub fn encode_page(
    bgra: &[u8],
    width: u32,
    height: u32,
    scratch: &mut Vec<u8>,
    likely: ImageFormat,
) -> Result<EncodedPage, EncodeError> {
    let expected = width as usize * height as usize * 4;
    if bgra.len() != expected {
        return Err(EncodeError::WrongBufferSize {
            got: bgra.len(),
            expected,
            width,
            height,
        });
    }
    let pixels = convert(bgra, std::mem::take(scratch));
    let result = encode_converted(bgra, &pixels, width, height, likely);
    *scratch = pixels.data;
    result
}

fn encode_converted(
    bgra: &[u8],
    pixels: &Pixels,
    width: u32,
    height: u32,
    likely: ImageFormat,
) -> Result<EncodedPage, EncodeError> {
    // A colour page goes to the JPEG encoder as pdfium drew it: its BGRA
    // path is as fast as its RGB one, and the same pixels make the same
    // JPEG.
    let jpeg_input = if pixels.grayscale {
        JpegInput::Grey(&pixels.data)
    } else {
        JpegInput::Bgra(bgra)
    };
    let grayscale = pixels.grayscale;
    if likely == ImageFormat::Jpeg {
        let jpeg = encode_jpeg_below(jpeg_input, width, height, usize::MAX)?
            .ok_or(EncodeError::TooLargeForJpeg { width, height })?;
        // A PNG as large as the JPEG still wins the tie.
        let png = encode_png_below(pixels, width, height, jpeg.len())?;
        let jpeg_size = Some(jpeg.len());
        return Ok(match png {
            Some(png) => EncodedPage {
                format: ImageFormat::Png,
                png_size: Some(png.len()),
                bytes: png,
                jpeg_size,
                grayscale,
            },
            None => EncodedPage {
                format: ImageFormat::Jpeg,
                png_size: None,
                bytes: jpeg,
                jpeg_size,
                grayscale,
            },
        });
    }
    let png =
        encode_png_below(pixels, width, height, usize::MAX)?.ok_or(EncodeError::TooLargeForJpeg { width, height })?;
    let jpeg = encode_jpeg_below(jpeg_input, width, height, png.len())?;
    let png_size = png.len();
    Ok(match jpeg {
        Some(jpeg) if jpeg.len() < png_size => EncodedPage {
            format: ImageFormat::Jpeg,
            jpeg_size: Some(jpeg.len()),
            bytes: jpeg,
            png_size: Some(png_size),
            grayscale,
        },
        jpeg => EncodedPage {
            format: ImageFormat::Png,
            jpeg_size: jpeg.map(|j| j.len()),
            bytes: png,
            png_size: Some(png_size),
            grayscale,
        },
    })
}

/// The PNG, or `None` once it would pass `limit` bytes.
fn encode_png_below(pixels: &Pixels, width: u32, height: u32, limit: usize) -> Result<Option<Vec<u8>>, EncodeError> {
    let mut writer = CappedWriter {
        bytes: Vec::with_capacity((pixels.data.len() / 8).min(limit)),
        limit,
        exceeded: false,
    };
    match write_png(pixels, width, height, &mut writer) {
        Ok(()) => Ok(Some(writer.bytes)),
        Err(_) if writer.exceeded => Ok(None),
        Err(error) => Err(error),
    }
}

fn write_png(pixels: &Pixels, width: u32, height: u32, out: &mut impl Write) -> Result<(), EncodeError> {
    {
        let mut encoder = png::Encoder::new(out, width, height);
        encoder.set_color(if pixels.grayscale {
            png::ColorType::Grayscale
        } else {
            png::ColorType::Rgb
        });
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Fast);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels.data)?;
        writer.finish()?;
    }
    Ok(())
}

/// A writer that refuses to grow past `limit` bytes, so the JPEG encoder
/// gives up once it has lost to the PNG.
struct CappedWriter {
    bytes: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("larger than the PNG"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What the JPEG encoder reads.
#[derive(Clone, Copy)]
enum JpegInput<'a> {
    Grey(&'a [u8]),
    Bgra(&'a [u8]),
}

/// The JPEG, or `None` once it would reach `limit` bytes.
fn encode_jpeg_below(
    input: JpegInput<'_>,
    width: u32,
    height: u32,
    limit: usize,
) -> Result<Option<Vec<u8>>, EncodeError> {
    let (Ok(w), Ok(h)) = (u16::try_from(width), u16::try_from(height)) else {
        return Err(EncodeError::TooLargeForJpeg { width, height });
    };
    let mut writer = CappedWriter {
        bytes: Vec::with_capacity(limit.min(1 << 22)),
        limit,
        exceeded: false,
    };
    let (data, colour) = match input {
        JpegInput::Grey(data) => (data, jpeg_encoder::ColorType::Luma),
        JpegInput::Bgra(data) => (data, jpeg_encoder::ColorType::Bgra),
    };
    let encoder = jpeg_encoder::Encoder::new(&mut writer, JPEG_QUALITY);
    match encoder.encode(data, w, h, colour) {
        Ok(()) => Ok(Some(writer.bytes)),
        Err(_) if writer.exceeded => Ok(None),
        Err(error) => Err(EncodeError::Jpeg(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bgra(width: u32, height: u32, pixel: impl Fn(u32, u32) -> [u8; 4]) -> Vec<u8> {
        let mut out = Vec::with_capacity((width * height * 4) as usize);
        for y in 0..height {
            for x in 0..width {
                out.extend_from_slice(&pixel(x, y));
            }
        }
        out
    }

    #[test]
    fn a_flat_text_like_page_is_kept_as_grey_png_and_decodes_to_the_same_pixels() {
        let (w, h) = (300, 200);
        let page = bgra(w, h, |x, y| {
            if (x / 7 + y / 11) % 5 == 0 {
                [0, 0, 0, 255]
            } else {
                [255, 255, 255, 255]
            }
        });
        let encoded = encode_page(&page, w, h, &mut Vec::new(), ImageFormat::Png).expect("encode");
        assert_eq!(encoded.format, ImageFormat::Png);
        assert!(encoded.grayscale);
        let decoded = image::load_from_memory(&encoded.bytes).expect("decodes").to_luma8();
        assert_eq!(decoded.dimensions(), (w, h));
        assert_eq!(decoded.get_pixel(0, 0).0, [0]);
        assert_eq!(decoded.get_pixel(1, 1).0, [0]);
        assert_eq!(decoded.get_pixel(7, 0).0, [255]);
    }

    #[test]
    fn a_photo_like_page_is_kept_as_jpeg_smaller_than_its_png() {
        let (w, h) = (400, 300);
        // Smooth colour noise: what JPEG is made for, and PNG is not.
        let page = bgra(w, h, |x, y| {
            let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) % 64;
            [(x % 256) as u8, (y % 256) as u8, (128 + n) as u8, 255]
        });
        let encoded = encode_page(&page, w, h, &mut Vec::new(), ImageFormat::Png).expect("encode");
        assert_eq!(encoded.format, ImageFormat::Jpeg);
        assert!(!encoded.grayscale);
        assert_eq!(encoded.jpeg_size, Some(encoded.bytes.len()));
        assert!(encoded.png_size.is_some_and(|png| encoded.bytes.len() < png));
        let decoded = image::load_from_memory_with_format(&encoded.bytes, image::ImageFormat::Jpeg).expect("decodes");
        assert_eq!((decoded.width(), decoded.height()), (w, h));
        let rgb = decoded.to_rgb8();
        // Blue is x and green is y in the source (BGRA order).
        let [_, g, b] = rgb.get_pixel(200, 100).0;
        assert!(b.abs_diff(200) < 24 && g.abs_diff(100) < 24, "colours survive: {g} {b}");
    }

    #[test]
    fn the_abandoned_jpeg_would_really_have_been_larger() {
        let (w, h) = (256, 256);
        let page = bgra(w, h, |x, _| {
            if x < 128 {
                [255, 255, 255, 255]
            } else {
                [0, 0, 255, 255]
            }
        });
        let pixels = convert(&page, Vec::new());
        assert!(!pixels.grayscale);
        let png = encode_png_below(&pixels, w, h, usize::MAX)
            .expect("png")
            .expect("no cap");
        let capped = encode_jpeg_below(JpegInput::Bgra(&page), w, h, png.len()).expect("jpeg");
        let full = encode_jpeg_below(JpegInput::Bgra(&page), w, h, usize::MAX)
            .expect("jpeg")
            .expect("no cap");
        match capped {
            None => assert!(full.len() > png.len(), "abandoned only when larger"),
            Some(bytes) => assert_eq!(bytes, full),
        }
    }

    #[test]
    fn the_likely_format_changes_the_work_not_the_choice() {
        let text = bgra(300, 200, |x, y| {
            if (x / 7 + y / 11) % 5 == 0 {
                [0, 0, 0, 255]
            } else {
                [255, 255, 255, 255]
            }
        });
        let photo = bgra(300, 200, |x, y| {
            let v = ((x * 7 + y * 13) ^ (x * y)) % 256;
            [v as u8, (v / 2) as u8, (255 - v) as u8, 255]
        });
        for page in [&text, &photo] {
            let png_first = encode_page(page, 300, 200, &mut Vec::new(), ImageFormat::Png).expect("encode");
            let jpeg_first = encode_page(page, 300, 200, &mut Vec::new(), ImageFormat::Jpeg).expect("encode");
            assert_eq!(png_first.format, jpeg_first.format);
            assert_eq!(png_first.bytes, jpeg_first.bytes);
        }
        let text_first = encode_page(&text, 300, 200, &mut Vec::new(), ImageFormat::Jpeg).expect("encode");
        assert_eq!(text_first.format, ImageFormat::Png);
        let photo_first = encode_page(&photo, 300, 200, &mut Vec::new(), ImageFormat::Jpeg).expect("encode");
        assert_eq!(photo_first.format, ImageFormat::Jpeg);
        assert_eq!(photo_first.png_size, None, "the losing PNG was abandoned");
    }

    #[test]
    fn a_colour_page_makes_the_same_jpeg_from_bgra_as_from_rgb() {
        let (w, h) = (300, 200);
        let page = bgra(w, h, |x, y| {
            [(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8, 255]
        });
        let pixels = convert(&page, Vec::new());
        assert_eq!(
            &pixels.data[..3],
            &page[..3].iter().rev().copied().collect::<Vec<u8>>()[..]
        );
        let from_bgra = encode_jpeg_below(JpegInput::Bgra(&page), w, h, usize::MAX)
            .expect("jpeg")
            .expect("no cap");
        let mut from_rgb = Vec::new();
        jpeg_encoder::Encoder::new(&mut from_rgb, JPEG_QUALITY)
            .encode(&pixels.data, w as u16, h as u16, jpeg_encoder::ColorType::Rgb)
            .expect("rgb jpeg");
        assert_eq!(from_bgra, from_rgb);
    }

    #[test]
    fn a_bitmap_of_the_wrong_size_is_an_error_not_a_panic() {
        assert!(matches!(
            encode_page(&[0; 10], 4, 4, &mut Vec::new(), ImageFormat::Png),
            Err(EncodeError::WrongBufferSize { .. })
        ));
    }
}
