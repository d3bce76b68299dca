//! The egui integration (`MarketplaceUiPlugin`): the purchase prompt modal, product icon textures,
//! the debug shop panel.
//!
//! Add [`EguiPlugin`](https://docs.rs/bevy_egui/0.42/bevy_egui/struct.EguiPlugin.html) and [`MarketplaceUiPlugin`]; add
//! [`MarketplaceDebugPanelPlugin`] for the F1 panel.

mod debug_panel;
mod debug_reports;
mod prompt_modal;

use std::collections::HashMap;

use bevy::prelude::*;
use bevy_egui::{EguiContexts, EguiPrimaryContextPass, egui};

pub use debug_panel::{DebugPanel, MarketplaceDebugPanelPlugin, RecentReceipts};
pub use debug_reports::{history_table, sales_chart};
pub use prompt_modal::{PromptView, prompt_modal};

use crate::icon::{ProductIcon, ProductIconLoader};
use crate::purchase::{ConfirmPolicy, OpenPrompt, PromptAnswer};
use crate::service::MarketplaceService;

/// Marks the player whose purchase prompts this screen shows; other players' prompts (a listen
/// server's remote players) are never shown. Without one, the first open prompt is shown.
#[derive(Component, Clone, Copy, Debug, Default)]
pub struct LocalPlayer;

/// Draws purchase prompts as an egui modal and answers them from its buttons (and Enter /
/// Escape). Replaces the headless [`ConfirmPolicy`] with [`ConfirmPolicy::Manual`] in `finish`.
///
/// It needs `bevy_egui`'s `EguiPlugin` and a camera (egui draws on the first one), and warns at
/// start when `EguiPlugin` is missing:
///
/// ```
/// use bevy::prelude::*;
/// use bevy_marketplace::prelude::*;
///
/// let mut app = App::new();
/// app.add_plugins((
///     MinimalPlugins,
///     MarketplacePlugin::default().with_ledger(LedgerBackend::in_memory()),
///     // A windowed game adds `DefaultPlugins` and `bevy_egui::EguiPlugin::default()` first, and
///     // spawns a `Camera2d`.
///     MarketplaceUiPlugin,
/// ));
/// app.finish(); // WARN: "EguiPlugin is not added, so purchase prompts are never drawn ..."
/// // The buttons answer now, not a headless policy.
/// assert_eq!(*app.world().resource::<ConfirmPolicy>(), ConfirmPolicy::Manual);
/// // The player this screen shows prompts for.
/// app.world_mut().spawn((Buyer::new(UserId(1)), LocalPlayer));
/// ```
#[derive(Default)]
pub struct MarketplaceUiPlugin;

/// The egui systems, in [`EguiPrimaryContextPass`].
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MarketplaceUiSystems {
    /// Uploads product icons as egui textures.
    Icons,
    /// Draws the prompt modal (after your own UI, so it stays on top).
    Prompt,
}

impl Plugin for MarketplaceUiPlugin {
    fn build(&self, app: &mut App) {
        if app.is_plugin_added::<AssetPlugin>() {
            app.init_asset::<ProductIcon>()
                .init_asset_loader::<ProductIconLoader>();
        }
        app.add_systems(Update, warn_of_undrawn_prompts);
        app.init_resource::<ProductIcons>()
            .configure_sets(
                EguiPrimaryContextPass,
                (MarketplaceUiSystems::Icons, MarketplaceUiSystems::Prompt).chain(),
            )
            .add_systems(
                EguiPrimaryContextPass,
                (
                    upload_icons.in_set(MarketplaceUiSystems::Icons),
                    draw_prompt.in_set(MarketplaceUiSystems::Prompt),
                ),
            );
    }

    fn finish(&self, app: &mut App) {
        app.insert_resource(ConfirmPolicy::Manual);
        if !app.is_plugin_added::<bevy_egui::EguiPlugin>() {
            tracing::warn!("{MISSING_EGUI}");
        }
        // AssetPlugin added after this plugin: icons load all the same.
        if app.is_plugin_added::<AssetPlugin>()
            && !app.world().contains_resource::<Assets<ProductIcon>>()
        {
            app.init_asset::<ProductIcon>()
                .init_asset_loader::<ProductIconLoader>();
        }
    }
}

/// Said at startup when `EguiPlugin` is missing: prompts would wait for an answer forever.
const MISSING_EGUI: &str = "MarketplaceUiPlugin: EguiPlugin is not added, so purchase prompts are never drawn and wait forever for an answer: add bevy_egui::EguiPlugin::default() (and a camera: egui draws on the first one)";

/// How many frames a prompt may be open with nothing to draw it on before we say so (egui's
/// context is attached to a camera a frame or two after the camera appears).
const UNDRAWN_FRAMES: u32 = 60;

/// Says once when a purchase prompt stays open with no egui context to draw it: without a camera
/// there is none, and the prompt would wait forever for an answer.
fn warn_of_undrawn_prompts(
    prompts: Query<(), With<OpenPrompt>>,
    contexts: Query<(), With<bevy_egui::PrimaryEguiContext>>,
    mut undrawn_for: Local<u32>,
) {
    if prompts.is_empty() || !contexts.is_empty() {
        *undrawn_for = 0;
        return;
    }
    *undrawn_for = undrawn_for.saturating_add(1);
    if *undrawn_for == UNDRAWN_FRAMES {
        tracing::warn!(
            "MarketplaceUiPlugin: a purchase prompt has been open for {UNDRAWN_FRAMES} frames with no egui context to draw it, so it waits forever for an answer: spawn a camera (Camera2d or Camera3d); bevy_egui draws on the first one"
        );
    }
}

/// Product icons as egui textures, by icon path. Loaded when the catalog names them.
#[derive(Resource, Default)]
pub struct ProductIcons {
    handles: HashMap<String, Handle<ProductIcon>>,
    textures: HashMap<String, egui::TextureHandle>,
    catalog_generation: u64,
}

impl ProductIcons {
    /// The texture of an icon path, once loaded.
    pub fn texture(&self, icon: &str) -> Option<egui::TextureId> {
        self.textures.get(icon).map(egui::TextureHandle::id)
    }

    /// The texture of a product's icon, once loaded.
    pub fn for_product(
        &self,
        service: &MarketplaceService,
        product: crate::ProductId,
    ) -> Option<egui::TextureId> {
        let info = service.catalog().get(product)?;
        self.texture(info.icon.as_deref()?)
    }
}

fn upload_icons(
    mut contexts: EguiContexts,
    service: Res<MarketplaceService>,
    server: Option<Res<AssetServer>>,
    assets: Option<Res<Assets<ProductIcon>>>,
    mut icons: ResMut<ProductIcons>,
) -> Result {
    let (Some(server), Some(assets)) = (server, assets) else {
        return Ok(());
    };
    let generation = service.catalog().generation();
    if icons.catalog_generation != generation {
        icons.catalog_generation = generation;
        for product in service.catalog().products().iter() {
            if let Some(path) = &product.icon
                && !icons.handles.contains_key(path)
            {
                icons
                    .handles
                    .insert(path.clone(), server.load::<ProductIcon>(path.clone()));
            }
        }
    }
    if icons.handles.len() == icons.textures.len() {
        return Ok(());
    }
    let ctx = contexts.ctx_mut()?;
    let ready: Vec<(String, egui::ColorImage)> = icons
        .handles
        .iter()
        .filter(|(path, _)| !icons.textures.contains_key(*path))
        .filter_map(|(path, handle)| {
            let icon = assets.get(handle)?;
            let size = [icon.size[0] as usize, icon.size[1] as usize];
            Some((
                path.clone(),
                egui::ColorImage::from_rgba_unmultiplied(size, &icon.rgba),
            ))
        })
        .collect();
    for (path, image) in ready {
        let texture = ctx.load_texture(path.clone(), image, egui::TextureOptions::LINEAR);
        icons.textures.insert(path, texture);
    }
    Ok(())
}

/// The prompt this screen shows: the local player's, or, in a game that marks no local player,
/// the first open one. A listen server holds its remote players' prompts too; those are never
/// shown to the host.
fn shown_prompt<T>(
    prompts: impl IntoIterator<Item = (T, bool)>,
    has_local_player: bool,
) -> Option<T> {
    prompts
        .into_iter()
        .find(|(_, local)| *local || !has_local_player)
        .map(|(prompt, _)| prompt)
}

fn draw_prompt(
    mut contexts: EguiContexts,
    prompts: Query<(
        Entity,
        &OpenPrompt,
        Has<LocalPlayer>,
        &crate::PremiumBalance,
    )>,
    local_players: Query<(), With<LocalPlayer>>,
    service: Res<MarketplaceService>,
    icons: Res<ProductIcons>,
    offer: Option<Res<crate::TopUpOffer>>,
    mut answers: MessageWriter<PromptAnswer>,
) -> Result {
    let shown = shown_prompt(prompts.iter().map(|p| (p, p.2)), !local_players.is_empty());
    let Some((player, prompt, _, balance)) = shown else {
        return Ok(());
    };
    let mut view = PromptView::new(prompt, balance.0, &service, &icons);
    view.top_up = offer.map(|offer| offer.label.clone());
    if let Some(action) = prompt_modal(contexts.ctx_mut()?, &view) {
        answers.write(PromptAnswer {
            player,
            prompt: prompt.id,
            action,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::shown_prompt;

    #[test]
    fn a_host_sees_only_its_own_players_prompt() {
        // A listen server: remote players' prompts are in the host's world too.
        assert_eq!(shown_prompt([("remote", false)], true), None);
        assert_eq!(
            shown_prompt([("remote", false), ("host", true)], true),
            Some("host")
        );
        // No local player marked: the first open prompt.
        assert_eq!(shown_prompt([("a", false), ("b", false)], false), Some("a"));
    }
}
