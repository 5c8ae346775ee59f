//! Images: decoding (PNG, JPEG), resizing exactly as the official FFN pipeline does, and writing
//! predictions back to PNG.
//!
//! The FFN pipeline resizes with `torchvision.transforms.Resize` on a PIL image, i.e. Pillow's
//! separable *bilinear* resampling with a support that grows with the reduction factor
//! (antialiasing), computed in 8-bit fixed point with an 8-bit intermediate after the horizontal
//! pass. [`resize_bilinear_antialias`] reproduces that arithmetic bit for bit.
//!
//! Every image file is read through [`decode_image`] or [`image_dimensions`]: a regular file of at
//! most [`FileLimit::IMAGE`] bytes (a FIFO or a device is refused before it is opened), whose
//! header's width × height is checked against [`MAX_IMAGE_PIXELS`] before anything is decoded, so
//! that a small file claiming a huge raster is an error, not a huge allocation.

use std::io::{BufReader, Cursor};
use std::path::Path;

use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::{
    DynamicImage, EncodableLayout, ImageBuffer, ImageFormat, ImageReader, Limits,
    PixelWithColorType, RgbImage,
};

use crate::error::{Result, XincError};
use crate::io::files::{env_limit, open_regular, read_bytes, FileLimit};

/// The largest image decoded, in pixels (width × height): 2²⁵ = 33.5 million, 16 times a
/// Cityscapes frame (1024×2048, the largest frame of either dataset) and 4 times a 4K video frame
/// (2160×3840). Its 16-bit decode takes 64 MiB a channel. `XINC_MAX_IMAGE_PIXELS` raises it.
pub const MAX_IMAGE_PIXELS: u64 = 1 << 25;

/// The environment variable that raises [`MAX_IMAGE_PIXELS`].
pub const MAX_IMAGE_PIXELS_ENV: &str = "XINC_MAX_IMAGE_PIXELS";

/// An error unless a `width`×`height` raster is within [`MAX_IMAGE_PIXELS`].
fn check_pixels(path: &Path, width: u32, height: u32) -> Result<()> {
    let max = env_limit(MAX_IMAGE_PIXELS_ENV, MAX_IMAGE_PIXELS)?;
    let pixels = width as u64 * height as u64;
    if pixels <= max {
        return Ok(());
    }
    Err(XincError::image(
        path,
        format!(
            "its header claims {width}x{height} = {pixels} pixels, more than the limit of {max} \
             (set {MAX_IMAGE_PIXELS_ENV} to raise it)"
        ),
    ))
}

/// `(height, width)` of an image file, from its header only (checked against
/// [`MAX_IMAGE_PIXELS`]).
pub(crate) fn image_dimensions(path: &Path) -> Result<(usize, usize)> {
    let (file, _) = open_regular(path, &FileLimit::IMAGE)?;
    let reader = ImageReader::new(BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| XincError::io(path, e))?;
    if reader.format().is_none() {
        return Err(XincError::image(path, UNKNOWN_FORMAT));
    }
    let (w, h) = reader
        .into_dimensions()
        .map_err(|e| XincError::image(path, e.to_string()))?;
    check_pixels(path, w, h)?;
    Ok((h as usize, w as usize))
}

const UNKNOWN_FORMAT: &str = "unknown image format (expected PNG or JPEG)";

/// Decodes an image file (`format`, or guessed from its first bytes when `None`): a regular file
/// of at most [`FileLimit::IMAGE`] bytes whose header's size is within [`MAX_IMAGE_PIXELS`],
/// decoded with the decoder's own limits set to that size.
pub(crate) fn decode_image(path: &Path, format: Option<ImageFormat>) -> Result<DynamicImage> {
    let bytes = read_bytes(path, &FileLimit::IMAGE)?;
    let reader = || -> Result<ImageReader<Cursor<&[u8]>>> {
        let cursor = Cursor::new(bytes.as_slice());
        let r = match format {
            Some(f) => ImageReader::with_format(cursor, f),
            None => ImageReader::new(cursor)
                .with_guessed_format()
                .map_err(|e| XincError::image(path, e.to_string()))?,
        };
        if r.format().is_none() {
            return Err(XincError::image(path, UNKNOWN_FORMAT));
        }
        Ok(r)
    };
    let (w, h) = reader()?
        .into_dimensions()
        .map_err(|e| XincError::image(path, e.to_string()))?;
    check_pixels(path, w, h)?;
    let mut decoder = reader()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    // The output (at most 4 channels of 32 bits) and as much again for the decoder's own buffers.
    limits.max_alloc = Some((w as u64 * h as u64 * 16 * 2).max(1 << 20));
    decoder.limits(limits);
    decoder
        .decode()
        .map_err(|e| XincError::image(path, e.to_string()))
}

/// An RGB image as f32 values in [0, 1], stored row-major and pixel-interleaved (`[H, W, 3]`),
/// which is also the `[P, 3]` layout of an image INR's output.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageTensor {
    pub height: usize,
    pub width: usize,
    /// `height·width·3` values, pixel p = h·W + w, channel c at `3p + c`.
    pub data: Vec<f32>,
}

impl ImageTensor {
    /// Converts an 8-bit RGB image with the official `ToTensor` scaling (v / 255).
    pub fn from_rgb8(img: &RgbImage) -> Self {
        ImageTensor {
            height: img.height() as usize,
            width: img.width() as usize,
            data: img.as_raw().iter().map(|&v| v as f32 / 255.0).collect(),
        }
    }

    /// The same values as a planar `[3, H, W]` buffer.
    pub fn to_chw(&self) -> Vec<f32> {
        let p = self.height * self.width;
        let mut out = vec![0.0; 3 * p];
        for (i, px) in self.data.chunks_exact(3).enumerate() {
            for c in 0..3 {
                out[c * p + i] = px[c];
            }
        }
        out
    }

    /// The image of a planar `[3, H, W]` buffer (the inverse of [`ImageTensor::to_chw`]).
    pub fn from_chw(height: usize, width: usize, chw: &[f32]) -> Self {
        let p = height * width;
        assert_eq!(chw.len(), 3 * p, "a [3, {height}, {width}] buffer");
        let data = (0..p)
            .flat_map(|i| (0..3).map(move |c| chw[c * p + i]))
            .collect();
        ImageTensor {
            height,
            width,
            data,
        }
    }

    /// Quantises to 8 bits as the official `save_tensor_img` does: clamp to [0, 1], multiply by
    /// 255 and truncate.
    pub fn to_rgb8(&self) -> RgbImage {
        let raw = self
            .data
            .iter()
            .map(|&v| (v.clamp(0.0, 1.0) * 255.0) as u8)
            .collect();
        RgbImage::from_raw(self.width as u32, self.height as u32, raw)
            .expect("buffer length is H·W·3 by construction")
    }
}

/// Decodes a PNG or JPEG file into 8-bit RGB (alpha is dropped, grey is expanded, 16-bit is
/// rounded to 8 bits). A truncated or corrupt file is an [`XincError::Image`] naming the file; a
/// file that is not a regular file, too large, or claims too many pixels is refused
/// ([`decode_image`]).
pub fn read_rgb8(path: &Path) -> Result<RgbImage> {
    Ok(decode_image(path, None)?.to_rgb8())
}

/// Reads an image and resizes it to `height`×`width` as the official FFN pipeline does.
pub fn load_rgb_resized(path: &Path, height: usize, width: usize) -> Result<ImageTensor> {
    if height == 0 || width == 0 {
        return Err(XincError::InvalidArgument(format!(
            "image size {height}x{width} must be positive"
        )));
    }
    let img = read_rgb8(path)?;
    Ok(ImageTensor::from_rgb8(&resize_bilinear_antialias(
        &img, height, width,
    )))
}

/// An image as the official NeRV pipeline feeds it: planar `[3, H, W]` f32 (v / 255), cropped to
/// `window` `(top, left, h, w)`, then torch's bicubic resize to `size` (not clamped).
pub(crate) fn nerv_frame(
    img: &RgbImage,
    window: (usize, usize, usize, usize),
    size: [usize; 2],
) -> Vec<f32> {
    use crate::data::resize::{crop_planar, resize_bicubic};
    let (h, w) = (img.height() as usize, img.width() as usize);
    let planar = crop_planar(&ImageTensor::from_rgb8(img).to_chw(), 3, h, w, window);
    resize_bicubic(&planar, 3, window.2, window.3, size[0], size[1])
}

/// Writes an image as PNG, atomically: 8-bit RGB ([`RgbImage`]), 16-bit grey, or any pixel type
/// PNG holds. `compression` trades time for size: [`CompressionType::Fast`] (the `image` crate's
/// default) for pictures, [`CompressionType::Best`] for the files of a generated dataset.
pub fn write_png<P>(
    path: &Path,
    img: &ImageBuffer<P, Vec<P::Subpixel>>,
    compression: CompressionType,
) -> Result<()>
where
    P: PixelWithColorType,
    [P::Subpixel]: EncodableLayout,
{
    let mut bytes = Vec::new();
    let encoder =
        PngEncoder::new_with_quality(Cursor::new(&mut bytes), compression, FilterType::Adaptive);
    img.write_with_encoder(encoder)
        .map_err(|e| XincError::image(path, e.to_string()))?;
    crate::io::write_atomic(path, |w| w.write_all(&bytes))
}

/// Fixed-point precision of Pillow's 8-bit resampling (`PRECISION_BITS = 32 − 8 − 2`).
const PRECISION_BITS: u32 = 22;

/// The resampling weights of one axis, as Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc`.
struct AxisCoeffs {
    /// (first input index, number of taps) per output index.
    bounds: Vec<(usize, usize)>,
    /// `ksize` fixed-point weights per output index.
    weights: Vec<i32>,
    ksize: usize,
}

impl AxisCoeffs {
    fn bilinear(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filterscale; // the bilinear filter has support 1
        let ksize = support.ceil() as usize * 2 + 1;
        let mut bounds = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        for (xx, k) in weights.chunks_exact_mut(ksize).enumerate() {
            let center = (xx as f64 + 0.5) * scale;
            // C casts truncate toward zero, as `as` does.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize - xmin;
            let taps: Vec<f64> = (0..xmax)
                .map(|x| {
                    let t = ((x + xmin) as f64 - center + 0.5) / filterscale;
                    (1.0 - t.abs()).max(0.0)
                })
                .collect();
            let total: f64 = taps.iter().sum();
            for (slot, w) in k.iter_mut().zip(&taps) {
                let w = if total != 0.0 { w / total } else { *w };
                let fixed = w * (1u32 << PRECISION_BITS) as f64;
                *slot = if w < 0.0 {
                    (fixed - 0.5) as i32
                } else {
                    (fixed + 0.5) as i32
                };
            }
            bounds.push((xmin, xmax));
        }
        AxisCoeffs {
            bounds,
            weights,
            ksize,
        }
    }

    /// Applies the weights of output index `o` to the samples `at(i)` of one channel.
    fn apply(&self, o: usize, at: impl Fn(usize) -> u8) -> u8 {
        let (xmin, n) = self.bounds[o];
        let k = &self.weights[o * self.ksize..o * self.ksize + n];
        let mut acc: i64 = 1 << (PRECISION_BITS - 1);
        for (x, &w) in k.iter().enumerate() {
            acc += at(xmin + x) as i64 * w as i64;
        }
        clip8(acc)
    }
}

fn clip8(v: i64) -> u8 {
    if v >= (1i64 << PRECISION_BITS << 8) {
        255
    } else if v <= 0 {
        0
    } else {
        (v >> PRECISION_BITS) as u8
    }
}

/// Pillow's `Image.resize((width, height), BILINEAR)` for 8-bit RGB: horizontal pass first, then
/// vertical, each only when that axis changes size.
pub fn resize_bilinear_antialias(img: &RgbImage, height: usize, width: usize) -> RgbImage {
    let (in_w, in_h) = (img.width() as usize, img.height() as usize);
    let mut cur = img.clone();
    if width != in_w {
        let coeffs = AxisCoeffs::bilinear(in_w, width);
        cur = RgbImage::from_fn(width as u32, in_h as u32, |x, y| {
            image::Rgb(std::array::from_fn(|c| {
                coeffs.apply(x as usize, |i| img.get_pixel(i as u32, y)[c])
            }))
        });
    }
    if height != in_h {
        let src = cur;
        let coeffs = AxisCoeffs::bilinear(in_h, height);
        cur = RgbImage::from_fn(width as u32, height as u32, |x, y| {
            image::Rgb(std::array::from_fn(|c| {
                coeffs.apply(y as usize, |i| src.get_pixel(x, i as u32)[c])
            }))
        });
    }
    cur
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grey_row(values: &[u8]) -> RgbImage {
        RgbImage::from_fn(values.len() as u32, 1, |x, _| {
            image::Rgb([values[x as usize]; 3])
        })
    }

    #[test]
    fn planar_buffers_and_png_compressions_round_trip() {
        let img = ImageTensor {
            height: 2,
            width: 3,
            data: (0..18).map(|v| v as f32 / 17.0).collect(),
        };
        let chw = img.to_chw();
        assert_eq!(chw[..3], [0.0, 3.0 / 17.0, 6.0 / 17.0]);
        assert_eq!(ImageTensor::from_chw(2, 3, &chw), img);
        let dir = tempfile::tempdir().unwrap();
        let rgb = img.to_rgb8();
        for compression in [CompressionType::Fast, CompressionType::Best] {
            let path = dir.path().join(format!("{compression:?}.png"));
            write_png(&path, &rgb, compression).unwrap();
            assert_eq!(read_rgb8(&path).unwrap(), rgb);
        }
        let grey =
            ImageBuffer::<image::Luma<u16>, _>::from_raw(2, 1, vec![1000u16, 65535]).unwrap();
        let path = dir.path().join("grey.png");
        write_png(&path, &grey, CompressionType::Best).unwrap();
        let back = image::open(&path).unwrap().into_luma16();
        assert_eq!(back.as_raw(), grey.as_raw());
    }

    #[test]
    fn halving_averages_pairs_with_a_triangle_of_support_two() {
        // Reduction by 2: support 2, taps at input centres weighted 1/4, 3/4, 3/4, 1/4 (normalised),
        // clipped at the borders. Output 0: inputs 0..2 with weights 0.75, 0.25 over 1.0 -> computed by
        // hand: centre 1.0; taps x=0: 1-|0-1+0.5|/2 = 0.75, x=1: 0.75, x=2: 0.25 -> 0.75+0.75+0.25 = 1.75.
        let img = grey_row(&[0, 100, 200, 40]);
        let out = resize_bilinear_antialias(&img, 1, 2);
        // (0·0.75 + 100·0.75 + 200·0.25) / 1.75 = 71.43 -> 71
        assert_eq!(out.get_pixel(0, 0)[0], 71);
        // Output 1: centre 3.0; taps x=1: 0.25, x=2: 0.75, x=3: 0.75 -> (25 + 150 + 30) / 1.75 = 117.14 -> 117
        assert_eq!(out.get_pixel(1, 0)[0], 117);
    }

    #[test]
    fn identity_size_is_a_no_op_and_constant_images_stay_constant() {
        let img = RgbImage::from_fn(16, 8, |x, y| image::Rgb([x as u8 * 10, y as u8 * 20, 7]));
        assert_eq!(resize_bilinear_antialias(&img, 8, 16), img);
        let flat = RgbImage::from_pixel(40, 24, image::Rgb([13, 200, 255]));
        let out = resize_bilinear_antialias(&flat, 5, 9);
        assert!(out.pixels().all(|p| p.0 == [13, 200, 255]));
    }

    #[test]
    fn upsampling_interpolates_linearly_between_centres() {
        // 2 -> 4: scale 0.5, support 1; output 1 has centre 0.75: taps x=0: 1-|0-0.75+0.5| = 0.75,
        // x=1: 1-|1-0.75+0.5| = 0.25 -> 0.75·0 + 0.25·200 = 50.
        let out = resize_bilinear_antialias(&grey_row(&[0, 200]), 1, 4);
        let row: Vec<u8> = (0..4).map(|x| out.get_pixel(x, 0)[0]).collect();
        assert_eq!(row, vec![0, 50, 150, 200]);
    }

    #[test]
    fn resize_is_bit_exact_with_pillow() {
        // Fixtures written by scripts/make-pillow-fixtures.py with Pillow 13.0
        // (`Image.resize((w, h), BILINEAR)`): downsampling by non-integer factors on both axes,
        // one axis only, and upsampling.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pillow");
        let input = read_rgb8(&dir.join("input.png")).unwrap();
        for (h, w) in [(16, 32), (13, 40), (75, 50), (100, 200), (37, 131)] {
            let pillow = read_rgb8(&dir.join(format!("bilinear_{h}x{w}.png"))).unwrap();
            let ours = resize_bilinear_antialias(&input, h, w);
            assert_eq!(ours.dimensions(), pillow.dimensions());
            let differing = ours
                .as_raw()
                .iter()
                .zip(pillow.as_raw())
                .filter(|(a, b)| a != b)
                .count();
            assert_eq!(
                differing, 0,
                "{h}x{w}: {differing} values differ from Pillow"
            );
        }
    }

    #[test]
    fn official_quantisation_truncates() {
        let t = ImageTensor {
            height: 1,
            width: 1,
            data: vec![0.999, 1.5, -0.2],
        };
        assert_eq!(t.to_rgb8().get_pixel(0, 0).0, [254, 255, 0]);
    }

    #[test]
    fn corrupt_files_are_typed_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("broken.png");
        let mut png = Vec::new();
        RgbImage::from_pixel(8, 8, image::Rgb([1, 2, 3]))
            .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        std::fs::write(&path, &png[..png.len() / 2]).unwrap();
        let err = read_rgb8(&path).unwrap_err();
        assert!(matches!(err, XincError::Image { .. }), "{err}");
        assert!(err.to_string().contains("broken.png"));
        std::fs::write(&path, b"not an image at all").unwrap();
        assert!(matches!(read_rgb8(&path), Err(XincError::Image { .. })));
    }

    /// A PNG of a signature, an IHDR chunk claiming `w`×`h` 8-bit RGB, an empty IDAT and IEND.
    fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        fn crc32(bytes: &[u8]) -> u32 {
            let mut c = !0u32;
            for &b in bytes {
                c ^= b as u32;
                for _ in 0..8 {
                    c = if c & 1 != 0 {
                        0xedb8_8320 ^ (c >> 1)
                    } else {
                        c >> 1
                    };
                }
            }
            !c
        }
        let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
        let mut ihdr = [w.to_be_bytes(), h.to_be_bytes()].concat();
        ihdr.extend([8, 2, 0, 0, 0]);
        for (kind, data) in [(b"IHDR", ihdr), (b"IDAT", vec![]), (b"IEND", vec![])] {
            png.extend((data.len() as u32).to_be_bytes());
            let body = [kind.as_slice(), &data].concat();
            png.extend(&body);
            png.extend(crc32(&body).to_be_bytes());
        }
        png
    }

    #[test]
    fn a_header_claiming_too_many_pixels_is_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.png");
        std::fs::write(&path, png_claiming(100_000, 100_000)).unwrap();
        for e in [
            read_rgb8(&path).unwrap_err(),
            image_dimensions(&path).unwrap_err(),
        ] {
            let m = e.to_string();
            assert!(matches!(e, XincError::Image { .. }), "{m}");
            assert!(
                m.contains("huge.png")
                    && m.contains("100000x100000 = 10000000000 pixels")
                    && m.contains("limit of 33554432")
                    && m.contains(MAX_IMAGE_PIXELS_ENV),
                "{m}"
            );
        }
        // Within the limit the same header is read, then the empty data is an error.
        std::fs::write(&path, png_claiming(64, 32)).unwrap();
        assert_eq!(image_dimensions(&path).unwrap(), (32, 64));
        assert!(matches!(read_rgb8(&path), Err(XincError::Image { .. })));
    }

    #[test]
    fn special_files_are_refused_as_images() {
        let e = read_rgb8(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(e.contains("a device"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = image_dimensions(dir.path()).unwrap_err().to_string();
        assert!(e.contains("a directory"), "{e}");
    }
}
