//! What the server lets through to replicon: every marketplace message from a client is checked
//! as bytes before it is decoded, and a client that sends a bad one is no longer trusted.

use bevy::prelude::*;
use bevy_replicon::bytes::Bytes;
use bevy_replicon::prelude::*;

use super::protocol::*;

/// On the server: a connected client that sent a marketplace message no well-behaved client
/// sends (malformed, oversized, or with bytes after the message). Its marketplace messages are
/// dropped from then on, and the server asks the transport to disconnect it.
#[derive(Component, Clone, Debug, PartialEq, Eq)]
pub struct DistrustedClient {
    /// What it sent.
    pub reason: String,
}

/// Drops the marketplace messages replicon should not decode: any from a distrusted client, and
/// the first bad one from a client, which then becomes distrusted and is disconnected.
pub(super) fn screen_client_messages(
    channels: Res<ClientChannels>,
    mut messages: ResMut<ServerMessages>,
    distrusted: Query<(), With<DistrustedClient>>,
    mut commands: Commands,
    mut disconnects: MessageWriter<DisconnectRequest>,
) {
    let mut newly_distrusted: Vec<Entity> = Vec::new();
    let mut screen = |channel: usize, check: fn(&Bytes) -> Result<(), String>, name: &str| {
        let received: Vec<(Entity, Bytes)> = messages.drain_received(channel).collect();
        for (client, bytes) in received {
            if distrusted.contains(client) || newly_distrusted.contains(&client) {
                continue;
            }
            match check(&bytes) {
                Ok(()) => messages.insert_received(client, channel, bytes),
                Err(problem) => {
                    let reason = format!("a malformed {name} ({problem})");
                    tracing::warn!(
                        "client {client} sent {reason}: dropped; the client is no longer trusted and is disconnected"
                    );
                    newly_distrusted.push(client);
                    if let Ok(mut entity) = commands.get_entity(client) {
                        entity.insert(DistrustedClient { reason });
                    }
                    disconnects.write(DisconnectRequest { client });
                }
            }
        }
    };
    screen(
        channels.prompt_request,
        well_formed::<NetPromptRequest>,
        "prompt request",
    );
    screen(
        channels.prompt_answer,
        well_formed::<NetPromptAnswer>,
        "prompt answer",
    );
}

/// `Ok` if `bytes` hold exactly one `M`, within [`MAX_CLIENT_MESSAGE_BYTES`].
fn well_formed<M: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<(), String> {
    if bytes.len() > MAX_CLIENT_MESSAGE_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_CLIENT_MESSAGE_BYTES} any marketplace message takes",
            bytes.len()
        ));
    }
    let mut rest = bytes.clone();
    bevy_replicon::postcard_utils::from_buf::<M, _>(&mut rest)
        .map_err(|e| format!("{} bytes that do not decode: {e}", bytes.len()))?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the message", rest.len()));
    }
    Ok(())
}
