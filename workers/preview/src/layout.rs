//! How large a page's image is: Papermark's rules, as pure arithmetic.
//!
//! A page is drawn at 2.95 pixels per point (about 212 dpi), or at 2 when
//! it is 1600 pt wide or wider; the scale then shrinks so that neither side
//! passes [`MAX_SIDE`] pixels and the image stays within [`MAX_PIXELS`].
//! A page whose size is not a size (zero, negative, not finite, wider than
//! any sheet could be) is refused rather than drawn.
//!
//! [`LayoutRule::Supermark`] is Supermark's own rule instead (its
//! `convert-page` route): 3 pixels per point, 2 from 1600 pt wide, and a
//! page past the caps drawn at the capped scale floored to a tenth (never
//! under 1, unless the caps themselves need less), with sides rounded up.

/// Pixels per point for an ordinary page.
pub const DEFAULT_SCALE: f32 = 2.95;
/// Pixels per point for a page at least [`WIDE_PAGE_POINTS`] wide.
pub const WIDE_SCALE: f32 = 2.0;
pub const WIDE_PAGE_POINTS: f32 = 1600.0;
/// The longest side of a page image, in pixels.
pub const MAX_SIDE: u32 = 8000;
/// The most pixels a page image may have.
pub const MAX_PIXELS: u64 = 32_000_000;
/// Larger than any real sheet (about 35 m): a side past this is hostile or broken.
pub const MAX_PAGE_POINTS: f32 = 100_000.0;
/// Smaller than any real sheet (a third of a millimetre).
pub const MIN_PAGE_POINTS: f32 = 1.0;

/// Which rule sizes a page's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LayoutRule {
    /// kiln's own: 2.95 pixels per point, sides rounded.
    #[default]
    Kiln,
    /// Supermark's: 3 (or 2) pixels per point, tenths under the caps,
    /// sides rounded up.
    Supermark,
}

impl LayoutRule {
    pub fn name(self) -> &'static str {
        match self {
            LayoutRule::Kiln => "kiln",
            LayoutRule::Supermark => "supermark",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "kiln" => Some(LayoutRule::Kiln),
            "supermark" => Some(LayoutRule::Supermark),
            _ => None,
        }
    }

    /// The layout of a page of `width` × `height` points.
    pub fn layout(self, width: f32, height: f32) -> Result<PageLayout, AbsurdPageSize> {
        match self {
            LayoutRule::Kiln => layout(width, height),
            LayoutRule::Supermark => supermark_layout(width, height),
        }
    }
}

/// The pixel size a page is drawn at.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PageLayout {
    pub width: u32,
    pub height: u32,
    pub scale: f32,
    /// The scale as the rule states it, for what is reported about the
    /// page (Supermark's `scaleFactor`, `width = originalWidth × scale`).
    pub exact_scale: f64,
}

impl PageLayout {
    /// Half the size (sides rounded up), for a page that cannot be drawn
    /// at full scale.
    pub fn halved(self) -> Self {
        Self {
            width: self.width.div_ceil(2).max(1),
            height: self.height.div_ceil(2).max(1),
            scale: self.scale / 2.0,
            exact_scale: self.exact_scale / 2.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("page size {width} × {height} pt is not a real page size ({reason})")]
pub struct AbsurdPageSize {
    pub width: f32,
    pub height: f32,
    pub reason: &'static str,
}

/// The layout of a page of `width` × `height` points.
pub fn layout(width: f32, height: f32) -> Result<PageLayout, AbsurdPageSize> {
    check_size(width, height)?;
    let absurd = |reason| AbsurdPageSize { width, height, reason };
    let mut scale = if width >= WIDE_PAGE_POINTS {
        WIDE_SCALE
    } else {
        DEFAULT_SCALE
    };
    let (w, h) = (f64::from(width), f64::from(height));
    let side_cap = f64::from(MAX_SIDE) / w.max(h);
    let area_cap = (MAX_PIXELS as f64 / (w * h)).sqrt();
    let cap = side_cap.min(area_cap);
    if f64::from(scale) > cap {
        scale = cap as f32;
    }
    let pixels = |points: f64| (points * f64::from(scale)).round().clamp(0.0, f64::from(MAX_SIDE)) as u32;
    let (mut px_w, mut px_h) = (pixels(w), pixels(h));
    // Rounding up may step one pixel past the area cap.
    while u64::from(px_w) * u64::from(px_h) > MAX_PIXELS {
        if px_w >= px_h { px_w -= 1 } else { px_h -= 1 }
    }
    if px_w == 0 || px_h == 0 {
        return Err(absurd("so narrow that its image would have no pixels"));
    }
    Ok(PageLayout {
        width: px_w,
        height: px_h,
        scale,
        exact_scale: (f64::from(scale) * 10_000.0).round() / 10_000.0,
    })
}

fn check_size(width: f32, height: f32) -> Result<(), AbsurdPageSize> {
    let absurd = |reason| AbsurdPageSize { width, height, reason };
    if !width.is_finite() || !height.is_finite() {
        return Err(absurd("not a finite number"));
    }
    if width < MIN_PAGE_POINTS || height < MIN_PAGE_POINTS {
        return Err(absurd("a side is under 1 pt"));
    }
    if width > MAX_PAGE_POINTS || height > MAX_PAGE_POINTS {
        return Err(absurd("a side is over 100,000 pt"));
    }
    Ok(())
}

/// Supermark's `convert-page` sizing. Where Supermark's floor of 1 would
/// still pass the caps (a page over 8000 pt), kiln keeps to the caps: such
/// an image could need gigabytes.
fn supermark_layout(width: f32, height: f32) -> Result<PageLayout, AbsurdPageSize> {
    check_size(width, height)?;
    let (w, h) = (f64::from(width), f64::from(height));
    let side = f64::from(MAX_SIDE);
    let area = MAX_PIXELS as f64;
    let mut scale: f64 = if w >= f64::from(WIDE_PAGE_POINTS) { 2.0 } else { 3.0 };
    if w * scale > side || h * scale > side || w * scale * h * scale > area {
        let cap = (side / w).min(side / h).min((area / (w * h)).sqrt());
        scale = ((cap * 10.0).floor() / 10.0).max(1.0);
        if scale > cap {
            scale = cap;
        }
    }
    let pixels = |points: f64| (points * scale).ceil().clamp(1.0, side) as u32;
    let (px_w, px_h) = (pixels(w), pixels(h));
    Ok(PageLayout {
        width: px_w,
        height: px_h,
        scale: scale as f32,
        exact_scale: scale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letter_page_is_drawn_at_2_95() {
        let page = layout(612.0, 792.0).expect("letter");
        assert_eq!((page.width, page.height), (1805, 2336));
        assert!((page.scale - 2.95).abs() < 1e-6);
    }

    #[test]
    fn a_page_1600_pt_wide_is_drawn_at_2() {
        let page = layout(1600.0, 900.0).expect("wide");
        assert_eq!((page.width, page.height, page.scale), (3200, 1800, 2.0));
        let narrower = layout(1599.0, 900.0).expect("just under");
        assert!((narrower.scale - 2.95).abs() < 1e-6);
    }

    #[test]
    fn long_sides_are_capped_at_8000_pixels() {
        let page = layout(612.0, 5000.0).expect("tall strip");
        assert_eq!(page.height, 8000);
        assert!(page.scale < 2.95);
        assert_eq!(page.width, (612.0 * page.scale).round() as u32);
    }

    #[test]
    fn large_pages_stay_within_32_megapixels() {
        let page = layout(5000.0, 5000.0).expect("square poster");
        assert!(u64::from(page.width) * u64::from(page.height) <= MAX_PIXELS);
        assert!(page.width <= MAX_SIDE && page.height <= MAX_SIDE);
        assert!(
            page.width >= 5650,
            "the cap keeps as many pixels as it may: {}",
            page.width
        );
    }

    #[test]
    fn supermark_draws_at_3_or_2_in_tenths_under_the_caps() {
        let rule = LayoutRule::Supermark;
        let letter = rule.layout(612.0, 792.0).expect("letter");
        assert_eq!((letter.width, letter.height, letter.exact_scale), (1836, 2376, 3.0));
        let a4 = rule.layout(595.276, 841.89).expect("a4");
        assert_eq!(a4.exact_scale, 3.0);
        assert_eq!((a4.width, a4.height), (1786, 2526), "sides round up");
        let wide = rule.layout(1600.0, 900.0).expect("wide");
        assert_eq!(wide.exact_scale, 2.0);
        let poster = rule.layout(3000.0, 3000.0).expect("poster");
        assert_eq!(poster.exact_scale, 1.8, "Supermark's example");
        assert_eq!((poster.width, poster.height), (5400, 5400));
        let huge = rule.layout(20_000.0, 500.0).expect("a strip wider than 8000 pt");
        assert!(huge.exact_scale < 1.0 && huge.width <= MAX_SIDE);
    }

    #[test]
    fn sizes_that_are_not_sizes_are_refused() {
        for (w, h) in [
            (0.0, 792.0),
            (-612.0, 792.0),
            (f32::NAN, 1.0),
            (f32::INFINITY, 10.0),
            (1e9, 1e9),
            (2.0, 99_999.0),
        ] {
            assert!(layout(w, h).is_err(), "{w} × {h}");
        }
    }
}
