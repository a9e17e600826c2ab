//! End to end: the example's game socket (`GET /game/ws`) over real HTTP with a real WebSocket
//! client, on PostgreSQL with two instances. What happens to a session through instance A
//! closes the socket held on instance B, with the documented code and reason.
//!
//! Build the example first when running this file alone:
//! `cargo build --all-features --example mud_server`.

use crate::common;

use std::time::Duration;

use common::example::{SchemaUrl, Server, schema_url};
use futures_util::{SinkExt, StreamExt};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The documented bound for another instance to close a socket: the notification's arrival
/// and one lookup take milliseconds; this is only the limit after which the test fails.
const BOUND: Duration = Duration::from_secs(10);

/// Two example servers on one fresh schema, and that schema's URL.
async fn two_instances(env: &[(&str, &str)]) -> (Server, Server, SchemaUrl) {
    let url = schema_url().await;
    let a = Server::start_with(Some(&url), env).await;
    let b = Server::start_with(Some(&url), env).await;
    (a, b, url)
}

/// Runs SQL on the schema, as the application (or an operator) would.
async fn sql(url: &str, statement: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.batch_execute(statement).await.unwrap();
}

pub(crate) async fn call(
    server: &Server,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Client::new()
        .request(method, format!("{}{path}", server.base))
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Logs `username` in on `server` and selects their first character: (token, session id).
pub(crate) async fn player(server: &Server, username: &str) -> (String, String) {
    let response = Client::new()
        .post(format!("{}/login", server.base))
        .header("x-requested-with", "test")
        .json(&json!({"username": username, "password": format!("{username}-pass")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let token = body["token"].as_str().unwrap().to_owned();
    let character = body["characters"][0]["id"].clone();
    let (status, _) = call(
        server,
        Method::POST,
        "/characters/select",
        &token,
        Some(json!({ "character_id": character })),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    (token, body["session_id"].as_str().unwrap().to_owned())
}

fn ws_request(server: &Server) -> tungstenite::handshake::client::Request {
    format!("{}/game/ws", server.base.replacen("http", "ws", 1))
        .into_client_request()
        .unwrap()
}

/// Opens the game socket with a Bearer token and reads the welcome line.
pub(crate) async fn connect(server: &Server, token: &str) -> Socket {
    let mut request = ws_request(server);
    request
        .headers_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    let welcome = next_text(&mut socket).await;
    assert!(welcome.starts_with("Welcome, "), "{welcome}");
    socket
}

async fn next_text(socket: &mut Socket) -> String {
    loop {
        match tokio::time::timeout(BOUND, socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return text.to_string(),
            Ok(Some(Ok(Message::Close(frame)))) => panic!("closed: {frame:?}"),
            Ok(Some(Ok(_))) => {}
            other => panic!("no text: {other:?}"),
        }
    }
}

/// Reads until the server's close frame (within the bound): its code and reason.
pub(crate) async fn closed(socket: &mut Socket) -> (u16, String) {
    let deadline = tokio::time::Instant::now() + BOUND;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Ok(Some(Ok(Message::Close(None)))) => panic!("closed without a code"),
            Ok(Some(Ok(_))) => {}
            other => panic!("the socket was not closed in time: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_instance_a_does_closes_the_socket_on_instance_b() {
    let (a, b, url) = two_instances(&[]).await;
    let (admin, _) = player(&a, "superuser").await;

    // Logout.
    let (token, _) = player(&a, "player").await;
    let mut socket = connect(&b, &token).await;
    socket.send(Message::text("look")).await.unwrap();
    assert!(
        next_text(&mut socket)
            .await
            .starts_with("You are in pipeworks_web. Here: player_char")
    );
    let (status, _) = call(&a, Method::POST, "/logout", &token, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(closed(&mut socket).await, (4001, "session revoked".into()));

    // Sign out everywhere else.
    let (token, _) = player(&a, "player").await;
    let (other, _) = player(&a, "player").await;
    let mut socket = connect(&b, &token).await;
    let (status, _) = call(&a, Method::DELETE, "/sessions", &other, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(closed(&mut socket).await, (4001, "session revoked".into()));

    // The admin's kick.
    let (token, session_id) = player(&a, "player").await;
    let mut socket = connect(&b, &token).await;
    let (status, body) = call(
        &a,
        Method::POST,
        "/admin/sessions/kick",
        &admin,
        Some(json!({ "session_id": session_id })),
    )
    .await;
    assert_eq!((status, body), (StatusCode::OK, json!({"removed": true})));
    assert_eq!(closed(&mut socket).await, (4001, "session revoked".into()));

    // A role change: a promotion keeps the socket and says so; a role without `play_game`
    // closes it.
    let (token, _) = player(&a, "builder").await;
    let mut socket = connect(&b, &token).await;
    let (status, _) = call(
        &a,
        Method::POST,
        "/admin/users/builder/role",
        &admin,
        Some(json!({"role": "admin"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(next_text(&mut socket).await, "Your role is now admin.");
    socket.send(Message::text("who")).await.unwrap();
    assert_eq!(next_text(&mut socket).await, "Players: builder_char.");
    sql(
        &url,
        "UPDATE users SET role = 'visitor' WHERE username = 'builder'",
    )
    .await;
    assert_eq!(
        closed(&mut socket).await,
        (4003, "permission removed".into())
    );

    // Deactivation.
    let (token, _) = player(&a, "player").await;
    let mut socket = connect(&b, &token).await;
    let (status, _) = call(
        &a,
        Method::POST,
        "/admin/users/player/active",
        &admin,
        Some(json!({"active": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(closed(&mut socket).await, (4003, "user inactive".into()));
    let (status, _) = call(&b, Method::GET, "/me", &token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_keep_the_session_alive_and_silence_lets_it_expire() {
    let (a, b, _) = two_instances(&[
        ("SESSION_TTL_SECS", "2"),
        ("SESSION_TOUCH_INTERVAL_SECS", "1"),
    ])
    .await;
    let (token, _) = player(&a, "player").await;
    let mut socket = connect(&b, &token).await;
    // Four seconds of play, twice the idle timeout.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        socket.send(Message::text("who")).await.unwrap();
        assert_eq!(next_text(&mut socket).await, "Players: player_char.");
    }
    let (status, _) = call(&a, Method::GET, "/me", &token, None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the socket's messages kept the session"
    );
    // Silence: the session idles out and the socket closes.
    assert_eq!(closed(&mut socket).await, (4002, "session expired".into()));
    let (status, _) = call(&a, Method::GET, "/me", &token, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cookie_upgrade_needs_this_servers_origin() {
    let (a, _b, _) = two_instances(&[]).await;
    let (token, _) = player(&a, "player").await;
    let with = |origin: Option<&str>| {
        let mut request = ws_request(&a);
        let headers = request.headers_mut();
        headers.insert("cookie", format!("id={token}").parse().unwrap());
        if let Some(origin) = origin {
            headers.insert("origin", origin.parse().unwrap());
        }
        request
    };
    for origin in [
        Some("http://evil.example"),
        Some("null"),
        Some(&*a.base.replace("127.0.0.1", "localhost")),
        None,
    ] {
        match tokio_tungstenite::connect_async(with(origin)).await {
            Err(tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), StatusCode::FORBIDDEN, "{origin:?}");
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
                assert_eq!(body["detail"], "Cross-site request rejected");
            }
            other => panic!("{origin:?} was not refused: {:?}", other.map(|(_, r)| r)),
        }
    }
    // This server's own origin, as a browser on its page sends it.
    let (mut socket, _) = tokio_tungstenite::connect_async(with(Some(&a.base)))
        .await
        .unwrap();
    assert!(
        next_text(&mut socket)
            .await
            .starts_with("Welcome, player_char")
    );
    // The session page marks the session that holds a live connection.
    let page = Client::new()
        .get(format!("{}/account/sessions", a.base))
        .header("cookie", format!("id={token}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(page.matches("Live connection").count(), 1, "{page}");
    socket
        .close(Some(tungstenite::protocol::CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        }))
        .await
        .unwrap();
    // Without the cookie, no origin check, and no session: 401.
    let mut request = ws_request(&a);
    request
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), StatusCode::UNAUTHORIZED)
        }
        other => panic!("anonymous upgrade: {:?}", other.map(|(_, r)| r)),
    }
}

/// What one player types reaches the others as one bounded line: a `say` with a newline (which
/// would print a forged line under another player's name) is refused, and a message over the
/// limit closes the sender's socket instead of being relayed to every player in the room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_chat_stays_one_bounded_line() {
    let url = schema_url().await;
    let server = Server::start(Some(&url)).await;
    let (builder_token, _) = player(&server, "builder").await;
    let (player_token, _) = player(&server, "player").await;
    let mut builder = connect(&server, &builder_token).await;
    let mut player = connect(&server, &player_token).await;
    assert_eq!(next_text(&mut builder).await, "player_char arrives.");

    builder
        .send(Message::text(
            "say hello\nsuperuser_char says: send me your password",
        ))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut builder).await,
        "Say one line of text: no line breaks or control characters."
    );
    builder.send(Message::text("say hi")).await.unwrap();
    assert_eq!(next_text(&mut player).await, "builder_char says: hi");

    let _ = builder
        .send(Message::text(format!("say {}", "a".repeat(100_000))))
        .await;
    assert_eq!(next_text(&mut player).await, "builder_char leaves.");
    server.stop().await;
}
