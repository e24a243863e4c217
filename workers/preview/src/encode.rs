//! A rendered page to an image file: encoded as PNG and as JPEG (quality
//! 80), the smaller kept, as Papermark does. Pure: bytes in, bytes out.
//!
//! Two shortcuts keep the result identical while doing less work:
//! - a page with no colour (every pixel grey, as most text pages are) is
//!   encoded with one channel instead of three, both as PNG and as JPEG;
//! - the JPEG is made first, whole (libjpeg-turbo cannot stop half-way),
//!   and the PNG encoder stops as soon as its output passes the JPEG's
//!   size, since it could then only lose the comparison.

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
    /// The JPEG is always made whole (it is encoded first).
    pub jpeg_size: usize,
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
    Jpeg(#[from] turbojpeg::Error),
}

/// A page's pixels as the encoders read them. A page without colour is
/// converted once to one grey channel, which both encoders read. A colour
/// page stays as pdfium drew it (BGRA): the JPEG encoder reads that, and
/// the PNG encoder converts rows to RGB as it goes, so a PNG abandoned
/// halfway has converted half.
struct Pixels {
    /// The grey channel, or for a colour page the band of RGB rows the PNG
    /// encoder is writing.
    data: Vec<u8>,
    grayscale: bool,
}

/// Rows of a colour page converted to RGB at a time for the PNG encoder.
const PNG_BAND_ROWS: usize = 16;

/// Converts BGRA (pdfium's layout) to one grey channel when no pixel has
/// colour. `scratch` is reused between pages.
fn convert(bgra: &[u8], mut scratch: Vec<u8>) -> Pixels {
    let pixels = bgra.len() / 4;
    let colourless = bgra.chunks_exact(4).all(|p| p[0] == p[1] && p[1] == p[2]);
    if !colourless {
        scratch.clear();
        return Pixels {
            data: scratch,
            grayscale: false,
        };
    }
    // Sized once and written in place: a loop the compiler vectorizes,
    // where pushing pixel by pixel cost a sixth of a page's time.
    // Four pixels a step (fixed-size arrays), so the moves become shuffles.
    scratch.resize(pixels, 0);
    let (out_quads, out_rest) = scratch.as_chunks_mut::<4>();
    let (in_quads, in_rest) = bgra.as_chunks::<16>();
    for (grey, p) in out_quads.iter_mut().zip(in_quads) {
        *grey = [p[0], p[4], p[8], p[12]];
    }
    for (grey, p) in out_rest.iter_mut().zip(in_rest.chunks_exact(4)) {
        *grey = p[0];
    }
    Pixels {
        data: scratch,
        grayscale: true,
    }
}

/// BGRA pixels to RGB, into `out` (resized to fit), as `convert` does grey.
fn bgra_to_rgb(bgra: &[u8], out: &mut Vec<u8>) {
    out.resize(bgra.len() / 4 * 3, 0);
    let (out_quads, out_rest) = out.as_chunks_mut::<12>();
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

/// Encodes a `width` × `height` BGRA bitmap (stride `width * 4`) and keeps
/// the smaller of PNG and JPEG; a tie keeps the PNG, which is lossless.
///
/// The JPEG comes first: it is made whole either way, so the PNG, which can
/// stop early, is the one held to the other's size. Encoding the PNG first
/// would make both whole on every page.
pub fn encode_page(bgra: &[u8], width: u32, height: u32, scratch: &mut Vec<u8>) -> Result<EncodedPage, EncodeError> {
    let expected = width as usize * height as usize * 4;
    if bgra.len() != expected {
        return Err(EncodeError::WrongBufferSize {
            got: bgra.len(),
            expected,
            width,
            height,
        });
    }
    let mut pixels = convert(bgra, std::mem::take(scratch));
    let result = encode_converted(bgra, &mut pixels, width, height);
    *scratch = pixels.data;
    result
}

fn encode_converted(bgra: &[u8], pixels: &mut Pixels, width: u32, height: u32) -> Result<EncodedPage, EncodeError> {
    // A colour page goes to the JPEG encoder as pdfium drew it: its BGRA
    // path is as fast as its RGB one, and the same pixels make the same
    // JPEG.
    let grayscale = pixels.grayscale;
    let jpeg = encode_jpeg(jpeg_input(pixels, bgra), width, height)?;
    // A PNG as large as the JPEG still wins the tie.
    let png = encode_png_below(pixels, bgra, width, height, jpeg.len())?;
    let jpeg_size = jpeg.len();
    Ok(match png {
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
    })
}

/// What the JPEG encoder reads: the grey channel, or pdfium's BGRA as it
/// is (its BGRA path is as fast as its RGB one, and makes the same JPEG).
fn jpeg_input<'a>(pixels: &'a Pixels, bgra: &'a [u8]) -> JpegInput<'a> {
    if pixels.grayscale {
        JpegInput::Grey(&pixels.data)
    } else {
        JpegInput::Bgra(bgra)
    }
}

/// The PNG, or `None` once it would pass `limit` bytes.
fn encode_png_below(
    pixels: &mut Pixels,
    bgra: &[u8],
    width: u32,
    height: u32,
    limit: usize,
) -> Result<Option<Vec<u8>>, EncodeError> {
    let mut writer = CappedWriter {
        bytes: Vec::with_capacity((bgra.len() / 16).min(limit)),
        limit,
        exceeded: false,
    };
    match write_png(pixels, bgra, width, height, &mut writer) {
        Ok(()) => Ok(Some(writer.bytes)),
        Err(_) if writer.exceeded => Ok(None),
        Err(error) => Err(error),
    }
}

fn write_png(
    pixels: &mut Pixels,
    bgra: &[u8],
    width: u32,
    height: u32,
    out: &mut impl Write,
) -> Result<(), EncodeError> {
    let mut encoder = png::Encoder::new(out, width, height);
    encoder.set_color(if pixels.grayscale {
        png::ColorType::Grayscale
    } else {
        png::ColorType::Rgb
    });
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    if pixels.grayscale {
        writer.write_image_data(&pixels.data)?;
        writer.finish()?;
        return Ok(());
    }
    let mut stream = writer.stream_writer()?;
    for band in bgra.chunks(width as usize * 4 * PNG_BAND_ROWS) {
        bgra_to_rgb(band, &mut pixels.data);
        stream.write_all(&pixels.data).map_err(png::EncodingError::from)?;
    }
    stream.finish()?;
    Ok(())
}

/// A writer that refuses to grow past `limit` bytes, so the PNG encoder
/// gives up once it has lost to the JPEG.
struct CappedWriter {
    bytes: Vec<u8>,
    limit: usize,
    exceeded: bool,
}

impl Write for CappedWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("larger than the JPEG"));
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

/// The JPEG, at Papermark's quality.
fn encode_jpeg(input: JpegInput<'_>, width: u32, height: u32) -> Result<Vec<u8>, EncodeError> {
    // JPEG's own limit on a side.
    if width > 65_535 || height > 65_535 {
        return Err(EncodeError::TooLargeForJpeg { width, height });
    }
    let (pixels, format, bytes_per_pixel, subsampling) = match input {
        JpegInput::Grey(data) => (data, turbojpeg::PixelFormat::GRAY, 1, turbojpeg::Subsamp::Gray),
        JpegInput::Bgra(data) => (data, turbojpeg::PixelFormat::BGRA, 4, turbojpeg::Subsamp::Sub2x2),
    };
    let image = turbojpeg::Image {
        pixels,
        width: width as usize,
        pitch: width as usize * bytes_per_pixel,
        height: height as usize,
        format,
    };
    let jpeg = turbojpeg::compress(image, i32::from(JPEG_QUALITY), subsampling)?;
    Ok(jpeg.to_vec())
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
        let encoded = encode_page(&page, w, h, &mut Vec::new()).expect("encode");
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
        let encoded = encode_page(&page, w, h, &mut Vec::new()).expect("encode");
        assert_eq!(encoded.format, ImageFormat::Jpeg);
        assert!(!encoded.grayscale);
        assert_eq!(encoded.jpeg_size, encoded.bytes.len());
        assert_eq!(encoded.png_size, None, "the PNG stopped once it passed the JPEG");
        let mut pixels = convert(&page, Vec::new());
        let whole_png = encode_png_below(&mut pixels, &page, w, h, usize::MAX)
            .expect("png")
            .expect("no cap");
        assert!(encoded.bytes.len() < whole_png.len());
        let decoded = image::load_from_memory_with_format(&encoded.bytes, image::ImageFormat::Jpeg).expect("decodes");
        assert_eq!((decoded.width(), decoded.height()), (w, h));
        let rgb = decoded.to_rgb8();
        // Blue is x and green is y in the source (BGRA order).
        let [_, g, b] = rgb.get_pixel(200, 100).0;
        assert!(b.abs_diff(200) < 24 && g.abs_diff(100) < 24, "colours survive: {g} {b}");
    }

    #[test]
    fn the_abandoned_png_would_really_have_been_larger_and_a_kept_one_is_exact() {
        let (w, h) = (256, 256);
        // Flat colour: the PNG wins, and must decode to the same pixels
        // (it is written a band of rows at a time).
        let flat = bgra(w, h, |x, y| {
            if x < 128 {
                [255, 255, 255, 255]
            } else {
                [(y % 7) as u8, 0, 255, 255]
            }
        });
        let mut pixels = convert(&flat, Vec::new());
        assert!(!pixels.grayscale);
        let png = encode_png_below(&mut pixels, &flat, w, h, usize::MAX)
            .expect("png")
            .expect("no cap");
        let decoded = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
            .expect("decodes")
            .to_rgb8();
        for (x, y) in [(0, 0), (127, 255), (128, 3), (255, 255)] {
            let p = &flat[((y * w + x) * 4) as usize..][..4];
            assert_eq!(decoded.get_pixel(x, y).0, [p[2], p[1], p[0]], "pixel {x},{y}");
        }
        let capped = encode_png_below(&mut pixels, &flat, w, h, png.len()).expect("png");
        assert_eq!(capped.as_deref(), Some(&png[..]), "a PNG within its cap is whole");

        // Noise: the PNG loses to the JPEG, and is abandoned only because
        // it would have been larger.
        let noise = bgra(w, h, |x, y| {
            let n = (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)) % 64;
            [(x % 256) as u8, (y % 256) as u8, (128 + n) as u8, 255]
        });
        let mut pixels = convert(&noise, Vec::new());
        let jpeg = encode_jpeg(JpegInput::Bgra(&noise), w, h).expect("jpeg");
        let capped = encode_png_below(&mut pixels, &noise, w, h, jpeg.len()).expect("png");
        let full = encode_png_below(&mut pixels, &noise, w, h, usize::MAX)
            .expect("png")
            .expect("no cap");
        assert_eq!(capped, None);
        assert!(full.len() > jpeg.len(), "abandoned only when larger");
    }

    #[test]
    fn the_kept_format_is_the_smaller_of_both_encoded_whole() {
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
        for (page, expected) in [(&text, ImageFormat::Png), (&photo, ImageFormat::Jpeg)] {
            let encoded = encode_page(page, 300, 200, &mut Vec::new()).expect("encode");
            let mut pixels = convert(page, Vec::new());
            let whole_png = encode_png_below(&mut pixels, page, 300, 200, usize::MAX)
                .expect("png")
                .expect("no cap");
            let whole_jpeg = encode_jpeg(jpeg_input(&pixels, page), 300, 200).expect("jpeg");
            assert_eq!(encoded.format, expected);
            let smaller = if whole_png.len() <= whole_jpeg.len() {
                whole_png
            } else {
                whole_jpeg
            };
            assert_eq!(encoded.bytes, smaller);
        }
        let photo = encode_page(&photo, 300, 200, &mut Vec::new()).expect("encode");
        assert_eq!(photo.png_size, None, "the losing PNG was abandoned");
    }

    #[test]
    fn a_colour_page_makes_the_same_jpeg_from_bgra_as_from_rgb() {
        let (w, h) = (300, 200);
        let page = bgra(w, h, |x, y| {
            [(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8, 255]
        });
        let mut rgb = Vec::new();
        bgra_to_rgb(&page, &mut rgb);
        assert_eq!(&rgb[..3], &page[..3].iter().rev().copied().collect::<Vec<u8>>()[..]);
        let from_bgra = encode_jpeg(JpegInput::Bgra(&page), w, h).expect("jpeg");
        let rgb = turbojpeg::Image {
            pixels: &rgb[..],
            width: w as usize,
            pitch: w as usize * 3,
            height: h as usize,
            format: turbojpeg::PixelFormat::RGB,
        };
        let from_rgb = turbojpeg::compress(rgb, i32::from(JPEG_QUALITY), turbojpeg::Subsamp::Sub2x2).expect("rgb jpeg");
        assert_eq!(from_bgra, from_rgb.to_vec());
    }

    #[test]
    fn a_bitmap_of_the_wrong_size_is_an_error_not_a_panic() {
        assert!(matches!(
            encode_page(&[0; 10], 4, 4, &mut Vec::new()),
            Err(EncodeError::WrongBufferSize { .. })
        ));
    }
}
