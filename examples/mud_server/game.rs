//! The game socket: `GET /game/ws`, a shared room per world, closed when the session ends.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::Response;
use tokio::sync::mpsc;
use tower_session_auth::permissions::PlayGame;
use tower_session_auth::{
    GameUser, Session, permission::Permission, watch::SessionWatch, watch::WatchEvent,
};

use crate::{ApiResult, AppState, detail};

/// Close code when a role change took `play_game` away.
const PERMISSION_REMOVED: (u16, &str) = (4003, "permission removed");

/// The largest message a player may send, in bytes: a longer one closes the socket (1009)
/// before it is read whole, let alone relayed to the room.
const MAX_MESSAGE: usize = 1024;

/// The players in each world's room: a connection id, the character's name, and where to send
/// their lines.
#[derive(Default)]
pub struct Rooms {
    worlds: Mutex<HashMap<String, HashMap<u64, Player>>>,
    next_id: std::sync::atomic::AtomicU64,
}

/// Lines waiting for one player. A player whose socket does not read falls behind by at most
/// this many lines; later ones are dropped for them, so a stalled reader cannot grow the
/// server's memory.
const QUEUED_LINES: usize = 64;

struct Player {
    name: String,
    lines: mpsc::Sender<String>,
}

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<u64, Player>>> {
        self.worlds.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn enter(&self, world: &str, name: &str) -> (u64, mpsc::Receiver<String>) {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (lines, receiver) = mpsc::channel(QUEUED_LINES);
        self.broadcast(world, &format!("{name} arrives."));
        self.lock().entry(world.to_owned()).or_default().insert(
            id,
            Player {
                name: name.to_owned(),
                lines,
            },
        );
        (id, receiver)
    }

    fn leave(&self, world: &str, id: u64) {
        let name = {
            let mut worlds = self.lock();
            let Some(room) = worlds.get_mut(world) else {
                return;
            };
            let player = room.remove(&id);
            if room.is_empty() {
                worlds.remove(world);
            }
            player.map(|player| player.name)
        };
        if let Some(name) = name {
            self.broadcast(world, &format!("{name} leaves."));
        }
    }

    fn broadcast(&self, world: &str, line: &str) {
        if let Some(room) = self.lock().get(world) {
            for player in room.values() {
                // Full (a reader that fell behind) or closed: this player misses the line.
                let _ = player.lines.try_send(line.to_owned());
            }
        }
    }

    fn who(&self, world: &str) -> Vec<String> {
        let mut names: Vec<String> = self
            .lock()
            .get(world)
            .map(|room| room.values().map(|player| player.name.clone()).collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}

/// Upgrades a player's request. The extractors run first: 401 without a live session, 409
/// without a character, 403 for a cookie upgrade from another origin (the session layer's
/// check) or a role without `play_game`.
pub async fn upgrade(
    user: GameUser,
    session: Session,
    State(state): State<AppState>,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    if !state
        .manager
        .policy()
        .has_permission(&user.role, PlayGame::NAME)
    {
        return Err(detail(
            StatusCode::FORBIDDEN,
            "Insufficient permissions. Required: play_game",
        ));
    }
    let watch = session.watch().await?;
    Ok(ws
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| play(state, user, watch, socket)))
}

async fn play(state: AppState, user: GameUser, mut watch: SessionWatch, mut socket: WebSocket) {
    let world = user.world_id.clone();
    let name = user.character_name.clone();
    let (id, mut lines) = state.rooms.enter(&world, &name);
    let _ = socket
        .send(Message::text(format!(
            "Welcome, {name}. You are in {world}."
        )))
        .await;
    let close = loop {
        tokio::select! {
            event = watch.next() => match event {
                WatchEvent::RoleChanged(role) => {
                    if !state.manager.policy().has_permission(&role, PlayGame::NAME) {
                        break Some(PERMISSION_REMOVED);
                    }
                    let _ = socket.send(Message::text(format!("Your role is now {role}."))).await;
                }
                WatchEvent::Ended(end) => break Some((end.close_code(), end.reason())),
                _ => {}
            },
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    // A message is activity: it keeps the session from idling out.
                    watch.touch().await;
                    let reply = command(&state, &world, &name, text.as_str());
                    if let Some(reply) = reply {
                        if socket.send(Message::text(reply)).await.is_err() {
                            break None;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break None,
                Some(Ok(_)) => {}
            },
            Some(line) = lines.recv() => {
                if socket.send(Message::text(line)).await.is_err() {
                    break None;
                }
            }
        }
    };
    state.rooms.leave(&world, id);
    if let Some((code, reason)) = close {
        tracing::info!(
            session_id = %user.session_id,
            user = %user.username,
            code,
            reason,
            "game connection closed: the session ended"
        );
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            })))
            .await;
    }
}

/// Runs one command; the reply goes to the sender only, `say` goes to the room.
fn command(state: &AppState, world: &str, name: &str, text: &str) -> Option<String> {
    let text = text.trim();
    let (verb, rest) = text.split_once(' ').unwrap_or((text, ""));
    match verb {
        // A line break would print a line of the sender's choosing under another name.
        "say" if rest.chars().any(char::is_control) => {
            Some("Say one line of text: no line breaks or control characters.".to_owned())
        }
        "say" if !rest.trim().is_empty() => {
            state
                .rooms
                .broadcast(world, &format!("{name} says: {}", rest.trim()));
            None
        }
        "look" => Some(format!(
            "You are in {world}. Here: {}.",
            state.rooms.who(world).join(", ")
        )),
        "who" => Some(format!("Players: {}.", state.rooms.who(world).join(", "))),
        _ => Some("Commands: say <text>, look, who.".to_owned()),
    }
}
