//! Persisted player components: saved with the player's profile, committed with every grant.

use bevy::ecs::world::EntityRef;
use bevy::prelude::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ledger::PlayerSnapshot;

struct PersistedComponent {
    name: String,
    save: fn(&EntityRef) -> Option<Result<String, String>>,
    load: fn(&mut EntityCommands, &str) -> Result<(), String>,
    put_back: fn(&mut EntityWorldMut, Option<&str>) -> Result<(), String>,
}

/// The components registered with [`MarketplaceAppExt::persist_component`](crate::MarketplaceAppExt::persist_component).
#[derive(Resource, Default)]
pub(crate) struct PersistRegistry {
    entries: Vec<PersistedComponent>,
}

fn save_component<C: Component + Serialize>(entity: &EntityRef) -> Option<Result<String, String>> {
    entity
        .get::<C>()
        .map(|c| ron::to_string(c).map_err(|e| e.to_string()))
}

fn load_component<C: Component + DeserializeOwned>(
    entity: &mut EntityCommands,
    text: &str,
) -> Result<(), String> {
    let value: C = ron::from_str(text).map_err(|e| e.to_string())?;
    entity.insert(value);
    Ok(())
}

/// Sets `C` on the entity to the stored text, or removes it when there is none.
fn put_back_component<C: Component + DeserializeOwned>(
    entity: &mut EntityWorldMut,
    text: Option<&str>,
) -> Result<(), String> {
    match text {
        Some(text) => {
            let value: C = ron::from_str(text).map_err(|e| e.to_string())?;
            entity.insert(value);
        }
        None => {
            entity.remove::<C>();
        }
    }
    Ok(())
}

impl PersistRegistry {
    /// Registers `C` under `name`. Registering a name twice is an error.
    pub fn register<C: Component + Serialize + DeserializeOwned>(
        &mut self,
        name: &str,
    ) -> Result<(), String> {
        if name.contains('\0') {
            return Err(format!(
                "a persisted component's name cannot hold a NUL character ({name:?}): the ledger keys its value by the name"
            ));
        }
        if self.entries.iter().any(|e| e.name == name) {
            return Err(format!(
                "a persisted component named {name:?} is already registered"
            ));
        }
        self.entries.push(PersistedComponent {
            name: name.to_owned(),
            save: save_component::<C>,
            load: load_component::<C>,
            put_back: put_back_component::<C>,
        });
        Ok(())
    }

    /// Serialises the registered components the entity has. Fails (and nothing should be saved)
    /// if one cannot be serialised, so a save never drops a component.
    pub fn snapshot(&self, entity: &EntityRef) -> Result<PlayerSnapshot, String> {
        let mut snapshot = PlayerSnapshot::default();
        for entry in &self.entries {
            match (entry.save)(entity) {
                Some(Ok(text)) => {
                    snapshot.0.insert(entry.name.clone(), text);
                }
                Some(Err(e)) => return Err(format!("component {:?}: {e}", entry.name)),
                None => {}
            }
        }
        Ok(snapshot)
    }

    /// Inserts the stored components on the entity. A value that does not parse is an error
    /// naming the component. Stored names that are not registered are returned, so later saves
    /// carry them along instead of deleting them.
    pub fn restore(
        &self,
        entity: &mut EntityCommands,
        snapshot: &PlayerSnapshot,
    ) -> Result<PlayerSnapshot, String> {
        let mut unknown = PlayerSnapshot::default();
        for (name, text) in &snapshot.0 {
            match self.entries.iter().find(|e| &e.name == name) {
                Some(entry) => (entry.load)(entity, text)
                    .map_err(|e| format!("stored component {name:?} does not load: {e}"))?,
                None => {
                    tracing::warn!(
                        "stored component {name:?} is not registered with persist_component; keeping it untouched"
                    );
                    unknown.0.insert(name.clone(), text.clone());
                }
            }
        }
        Ok(unknown)
    }

    /// Puts the entity's registered components back as they were in `snapshot` (taken with
    /// [`snapshot`](Self::snapshot)): changed ones are overwritten, added ones removed, removed
    /// ones inserted again. This is how a handler that did not grant leaves no trace.
    pub fn roll_back(
        &self,
        entity: &mut EntityWorldMut,
        snapshot: &PlayerSnapshot,
    ) -> Result<(), String> {
        for entry in &self.entries {
            let before = snapshot.0.get(&entry.name).map(String::as_str);
            (entry.put_back)(entity, before)
                .map_err(|e| format!("component {:?} cannot be restored: {e}", entry.name))?;
        }
        Ok(())
    }
}

/// The short type name of `C`, used as its default persisted name.
pub(crate) fn short_type_name<C>() -> &'static str {
    let full = std::any::type_name::<C>();
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Component, Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Note(String);

    /// A component's text holding a NUL is saved as RON that holds none (RON escapes it), so any
    /// store keeps it, and it loads back as it was.
    #[test]
    fn a_nul_in_a_component_is_saved_escaped_and_loads_back() {
        let mut world = World::new();
        let entity = world.spawn(Note("a\0b".into())).id();
        let mut registry = PersistRegistry::default();
        registry.register::<Note>("Note").unwrap();
        assert!(registry.register::<Note>("No\0te").is_err());
        let snapshot = registry.snapshot(&world.entity(entity)).unwrap();
        assert!(
            !snapshot.0["Note"].contains('\0'),
            "{:?}",
            snapshot.0["Note"]
        );
        world.entity_mut(entity).remove::<Note>();
        registry
            .roll_back(&mut world.entity_mut(entity), &snapshot)
            .unwrap();
        assert_eq!(world.get::<Note>(entity), Some(&Note("a\0b".into())));
    }
}
