//! Installing a catalog into the service: at start, on every (re)load of the catalog asset.

use std::sync::Arc;
use std::time::SystemTime;

use bevy::asset::AssetLoadFailedEvent;
use bevy::prelude::*;

use super::MarketplaceService;
use crate::catalog::{Catalog, CatalogIndex, CatalogStatus};

/// Installs a catalog into the service, keeping product timestamps.
pub(crate) fn install_catalog(service: &mut MarketplaceService, catalog: &Catalog) {
    let index = CatalogIndex::build(catalog, Some(&service.catalog), SystemTime::now());
    service.catalog = Arc::new(index);
    service.catalog_loaded = true;
}

pub(crate) fn apply_catalog_events(
    mut events: MessageReader<AssetEvent<Catalog>>,
    mut failures: MessageReader<AssetLoadFailedEvent<Catalog>>,
    catalogs: Res<Assets<Catalog>>,
    mut status: ResMut<CatalogStatus>,
    mut service: ResMut<MarketplaceService>,
) {
    let Some(handle) = status.handle.clone() else {
        return;
    };
    for failure in failures.read() {
        if failure.id == handle.id() {
            // The first line says it all; the rest is a backtrace.
            let error = failure.error.to_string();
            let error = error.lines().next().unwrap_or_default();
            let message = format!("catalog {} rejected: {error}", failure.path);
            tracing::error!("{message}; the previous catalog stays in use");
            status.last_error = Some(message);
        }
    }
    let mut changed = false;
    for event in events.read() {
        if let AssetEvent::LoadedWithDependencies { id } | AssetEvent::Modified { id } = event
            && *id == handle.id()
        {
            changed = true;
        }
    }
    if changed && let Some(catalog) = catalogs.get(&handle) {
        install_catalog(&mut service, catalog);
        status.installed += 1;
        status.last_error = None;
        tracing::info!("catalog installed: {} products", service.catalog.len());
    }
}
