//! The catalog as a Bevy asset: loaded from RON, validated by the loader, hot-reloaded.

use bevy::asset::io::Reader;
use bevy::asset::{AssetLoader, LoadContext};
use bevy::prelude::*;

use super::{Catalog, CatalogError};

/// Loads `*.ron` catalogs as [`Catalog`]s. Validation runs in the loader, so a broken file never
/// replaces the catalog in use.
#[derive(Default, TypePath)]
pub(crate) struct CatalogLoader;

/// Why a catalog asset failed to load.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CatalogLoadError {
    /// Reading the file failed.
    #[error("cannot read catalog: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not UTF-8.
    #[error("catalog is not UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    /// Parsing or validation failed.
    #[error(transparent)]
    Invalid(#[from] CatalogError),
}

impl AssetLoader for CatalogLoader {
    type Asset = Catalog;
    type Settings = ();
    type Error = CatalogLoadError;

    async fn load(
        &self,
        reader: &mut dyn Reader,
        _settings: &(),
        load_context: &mut LoadContext<'_>,
    ) -> Result<Catalog, CatalogLoadError> {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).await?;
        let text = std::str::from_utf8(&bytes)?;
        let catalog = Catalog::from_ron_str(text, &load_context.path().to_string())?;
        #[cfg(feature = "icons")]
        for (index, icon) in catalog
            .products()
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p.icon.clone()?)))
            .collect::<Vec<_>>()
        {
            let checked = match load_context.read_asset_bytes(icon).await {
                Ok(bytes) => crate::icon::decode_icon(&bytes)
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("cannot be read: {e}")),
            };
            if let Err(reason) = checked {
                return Err(catalog.icon_error(index, reason).into());
            }
        }
        Ok(catalog)
    }

    fn extensions(&self) -> &[&str] {
        &["ron"]
    }
}

/// The catalog file in use and the last problem with it.
#[derive(Resource, Debug, Default)]
pub struct CatalogStatus {
    /// The handle of the catalog asset, when loaded from a file.
    pub handle: Option<Handle<Catalog>>,
    /// The last load or reload error; the previous catalog stays in use.
    pub last_error: Option<String>,
    /// How many catalogs were installed.
    pub installed: u64,
}

pub(crate) fn start_catalog_load(
    path: String,
) -> impl FnMut(Res<AssetServer>, ResMut<CatalogStatus>) {
    move |server, mut status| {
        status.handle = Some(server.load::<Catalog>(path.clone()));
    }
}
