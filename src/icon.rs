//! Product icons: 512×512 PNG, JPEG or BMP, cropped to a circle when loaded (as Roblox does on
//! upload). The catalog loader refuses a catalog whose icons are missing, the wrong size or the
//! wrong format.

use bevy::asset::io::Reader;
use bevy::asset::{Asset, AssetLoader, LoadContext};
use bevy::reflect::TypePath;
use image::{ImageFormat, RgbaImage};

/// Width and height every product icon must have.
pub const ICON_SIZE: u32 = 512;

/// Why an icon was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IconError {
    /// Not one of the accepted formats.
    #[error("is not a PNG, JPEG or BMP image ({0})")]
    Format(String),
    /// Not 512×512.
    #[error("is {width}×{height}; product icons must be 512×512")]
    Size {
        /// Width found.
        width: u32,
        /// Height found.
        height: u32,
    },
    /// The header looked right but the pixels did not decode.
    #[error("does not decode: {0}")]
    Decode(String),
    /// The file could not be read.
    #[error("cannot be read: {0}")]
    Read(String),
}

/// Checks format and size, decodes, and crops to a circle (transparent outside, anti-aliased edge).
pub fn decode_icon(bytes: &[u8]) -> Result<RgbaImage, IconError> {
    let format = image::guess_format(bytes).map_err(|e| IconError::Format(e.to_string()))?;
    if !matches!(
        format,
        ImageFormat::Png | ImageFormat::Jpeg | ImageFormat::Bmp
    ) {
        return Err(IconError::Format(format!("{format:?}")));
    }
    let decoded = image::load_from_memory_with_format(bytes, format)
        .map_err(|e| IconError::Decode(e.to_string()))?;
    let (width, height) = (decoded.width(), decoded.height());
    if (width, height) != (ICON_SIZE, ICON_SIZE) {
        return Err(IconError::Size { width, height });
    }
    let mut rgba = decoded.to_rgba8();
    crop_to_circle(&mut rgba);
    Ok(rgba)
}

/// Makes everything outside the inscribed circle transparent, with a one-pixel soft edge.
pub fn crop_to_circle(image: &mut RgbaImage) {
    let (w, h) = image.dimensions();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let radius = cx.min(cy);
    for (x, y, pixel) in image.enumerate_pixels_mut() {
        let d = ((x as f32 + 0.5 - cx).powi(2) + (y as f32 + 0.5 - cy).powi(2)).sqrt();
        let coverage = (radius - d + 0.5).clamp(0.0, 1.0);
        pixel.0[3] = (pixel.0[3] as f32 * coverage).round() as u8;
    }
}

/// A product icon, decoded and cropped: RGBA8 pixels, `ICON_SIZE`² of them.
#[derive(Asset, TypePath, Clone, Debug)]
pub struct ProductIcon {
    /// Width and height.
    pub size: [u32; 2],
    /// RGBA8, row-major.
    pub rgba: Vec<u8>,
}

/// Loads [`ProductIcon`]s from `.png`, `.jpg`, `.jpeg` and `.bmp` files (load them typed:
/// `asset_server.load::<ProductIcon>(path)`).
#[derive(Default, TypePath)]
pub struct ProductIconLoader;

impl AssetLoader for ProductIconLoader {
    type Asset = ProductIcon;
    type Settings = ();
    type Error = IconError;

    async fn load(
        &self,
        reader: &mut dyn Reader,
        _settings: &(),
        _load_context: &mut LoadContext<'_>,
    ) -> Result<ProductIcon, IconError> {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .await
            .map_err(|e| IconError::Read(e.to_string()))?;
        let image = decode_icon(&bytes)?;
        Ok(ProductIcon {
            size: [image.width(), image.height()],
            rgba: image.into_raw(),
        })
    }

    fn extensions(&self) -> &[&str] {
        &["png", "jpg", "jpeg", "bmp"]
    }
}
