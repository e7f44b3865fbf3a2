//! The web dashboard in a real browser: headless Chromium driven over WebDriver (chromedriver), against
//! a real server and receiver. A person's path through the page: create a subscription with the form
//! (and see a validation error inline), send a test webhook, watch it in the live feed, open the
//! subscription's attempts and a delivery's history; and the API token prompt. Screenshots at desktop
//! and phone widths go to `tests/artifacts/`.
//!
//! Chromium and chromedriver come from Debian (`tests/run` installs them). Without them these tests
//! fail rather than skip, so a green run always means the dashboard was exercised.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::process::{Child, Command};
use whd_e2e::{Receiver, TestServer, eventually, free_port};
use whd_sdk::{CreateSubscriptionRequest, IngestOptions, Subscription};

/// How long a test waits for the page to reflect something.
const DEADLINE: Duration = Duration::from_secs(20);

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

const DESKTOP: (u32, u32) = (1280, 900);
const PHONE: (u32, u32) = (390, 844);

/// A chromedriver of this test's own with one browser session, on a fresh profile.
struct Browser {
    client: Client,
    driver: Child,
    driver_address: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "{CHROMEDRIVER} or {CHROMIUM} is missing: run tests/run, which installs Debian's \
             chromium and chromium-driver packages"
        );
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let address = format!("127.0.0.1:{port}");
        eventually(DEADLINE, "chromedriver listens", || {
            let address = address.clone();
            async move { tokio::net::TcpStream::connect(address).await.ok() }
        })
        .await;

        let profile = tempfile::tempdir().expect("a temporary profile directory");
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-dev-shm-usage",
                    format!("--window-size={},{}", DESKTOP.0, DESKTOP.1),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            unreachable!("the capabilities are a JSON object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://{address}"))
            .await
            .expect("chromedriver opens a Chromium session");
        Browser {
            client,
            driver,
            driver_address: address,
            _profile: profile,
        }
    }

    async fn open(&self, url: &str) {
        self.client.goto(url).await.expect("the page loads");
    }

    /// Waits for an element matching `css` and returns it.
    async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(DEADLINE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|error| panic!("no element {css} appeared: {error}"))
    }

    /// Waits until the element matching `css` shows non-empty text and returns the text.
    async fn text_of(&self, css: &str) -> String {
        let what = format!("{css} shows text");
        eventually(DEADLINE, &what, || async move {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            if !element.is_displayed().await.ok()? {
                return None;
            }
            let text = element.text().await.ok()?;
            (!text.trim().is_empty()).then_some(text)
        })
        .await
    }

    /// Waits until the element matching `css` shows text other than `pending` (and not empty), and
    /// returns it: for notices that say something while a request is under way.
    async fn text_after(&self, css: &str, pending: &str) -> String {
        let what = format!("{css} shows something other than {pending:?}");
        eventually(DEADLINE, &what, || async move {
            let text = self.text_of(css).await;
            (text.trim() != pending).then_some(text)
        })
        .await
    }

    /// Waits until the element matching `css` shows exactly `expected`: the page re-renders after
    /// its API call returns, so the old text may still be showing for a moment.
    async fn wait_for_text(&self, css: &str, expected: &str) {
        let what = format!("{css} shows {expected:?}");
        eventually(DEADLINE, &what, || async move {
            let text = self
                .client
                .find(Locator::Css(css))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            (text.trim() == expected).then_some(())
        })
        .await
    }

    async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|error| panic!("{css} cannot be clicked: {error}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("the field clears");
        field.send_keys(text).await.expect("the field takes text");
    }

    /// Saves a screenshot of the page at the width of `size`, as tall as the page (at least `size`).
    async fn screenshot(&self, size: (u32, u32), name: &str) -> PathBuf {
        self.client
            .set_window_size(size.0, size.1)
            .await
            .expect("the window resizes");
        // The window's height includes its frame; grow it by what the page needs beyond the viewport.
        let overflow = self
            .client
            .execute(
                "return document.documentElement.scrollHeight - window.innerHeight;",
                vec![],
            )
            .await
            .expect("the page runs scripts")
            .as_i64()
            .and_then(|overflow| u32::try_from(overflow).ok())
            .unwrap_or(0);
        self.client
            .set_window_size(size.0, size.1 + overflow)
            .await
            .expect("the window resizes");
        let png = self.client.screenshot().await.expect("a screenshot");
        let directory = Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts");
        std::fs::create_dir_all(&directory).expect("the artifacts directory can be created");
        let path = directory.join(name);
        std::fs::write(&path, png).expect("the screenshot is saved");
        self.client
            .set_window_size(DESKTOP.0, DESKTOP.1)
            .await
            .expect("the window resizes");
        path
    }

    /// Ends the session, then asks chromedriver to quit and waits for it, so that no browser process
    /// outlives the test (killing chromedriver outright can leave its Chromium orphaned).
    async fn close(mut self) {
        // The client is a handle to the session; closing a clone of it ends the session.
        self.client.clone().close().await.expect("the session ends");
        ask_to_quit(&self.driver_address);
        let exited = tokio::time::timeout(DEADLINE, self.driver.wait()).await;
        assert!(exited.is_ok(), "chromedriver quits when asked");
    }
}

impl Drop for Browser {
    /// A test that failed before `close` still takes its browser with it: chromedriver, asked to quit,
    /// ends its Chromium first; only then does dropping the child kill whatever is left.
    fn drop(&mut self) {
        if !matches!(self.driver.try_wait(), Ok(None)) {
            return;
        }
        ask_to_quit(&self.driver_address);
        let waited = std::time::Instant::now();
        while matches!(self.driver.try_wait(), Ok(None)) && waited.elapsed() < DEADLINE {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// chromedriver's own shutdown request, which closes its sessions and their browsers. Blocking, so
/// that it also works while a failed test unwinds.
fn ask_to_quit(driver_address: &str) {
    let Ok(address) = driver_address.parse() else {
        return;
    };
    if let Ok(mut connection) = std::net::TcpStream::connect_timeout(&address, DEADLINE) {
        let _ = connection
            .write_all(b"GET /shutdown HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    }
}

#[tokio::test]
async fn a_person_creates_a_subscription_tests_it_and_follows_its_deliveries() {
    // Arrange: a server, a receiver that accepts, and a subscription whose target always fails,
    // so the feed shows both outcomes.
    let server = TestServer::start().await;
    let receiver = Receiver::start(200).await;
    let failing_receiver = Receiver::start(500).await;
    let failing = server
        .client
        .create_subscription(CreateSubscriptionRequest {
            subscription: Some(Subscription {
                target_url: failing_receiver.url.clone(),
                description: "billing service (down for maintenance)".into(),
                event_types: vec!["invoice.paid".into()],
                ..Default::default()
            }),
            generate_secret: false,
        })
        .await
        .expect("the subscription is created");
    let browser = Browser::start().await;
    browser.open(&format!("{}/", server.http_url)).await;
    browser.find("#live-status[data-state='live']").await;

    // An invalid URL: the API's message appears next to the field, and nothing is created.
    browser.type_into("#field-url", "not a url").await;
    browser.click("#form-submit").await;
    let error = browser
        .text_of(".field-error[data-field='subscription.target_url']")
        .await;
    assert!(error.starts_with("subscription.target_url: "), "{error}");
    let invalid = browser.find("#field-url").await;
    assert_eq!(
        invalid.attr("aria-invalid").await.unwrap().as_deref(),
        Some("true")
    );
    browser
        .screenshot(DESKTOP, "dashboard-invalid-url-desktop.png")
        .await;

    // Create a signed subscription through the form; its secret is shown once.
    browser.type_into("#field-url", &receiver.url).await;
    browser.type_into("#field-event-types", "").await;
    browser
        .type_into("#field-description", "orders service")
        .await;
    browser.click("#field-generate-secret").await;
    browser.click("#form-submit").await;
    let secret = browser.text_of("#secret-value").await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    let subscriptions = server
        .client
        .list_subscriptions(Default::default())
        .await
        .expect("subscriptions list");
    let created = subscriptions
        .subscriptions
        .iter()
        .find(|subscription| subscription.target_url == receiver.url)
        .expect("the form created the subscription");
    assert!(created.has_secret);
    assert_eq!(created.description, "orders service");
    let item = format!("li[data-subscription-id='{}']", created.id);
    let cleared = browser
        .find(".field-error[data-field='subscription.target_url']")
        .await;
    assert_eq!(cleared.text().await.unwrap(), "", "the old error is gone");

    // Send a test webhook with the button; it is queued, delivered, and shows in the live feed.
    browser
        .click(&format!("{item} button[data-action='test']"))
        .await;
    // The notice says "sending…" until the API answers; wait for the answer.
    let notice = browser
        .text_after(
            &format!("{item} .subscription-notice"),
            "sending a test webhook…",
        )
        .await;
    let delivery_id = notice
        .strip_prefix("test webhook queued as ")
        .unwrap_or_else(|| panic!("the page says the test was queued: {notice}"))
        .to_owned();
    browser
        .find(&format!(
            "#feed .feed-row[data-delivery-id='{delivery_id}'][data-kind='queued']"
        ))
        .await;
    browser
        .find(&format!(
            "#feed .feed-row[data-delivery-id='{delivery_id}'][data-outcome='success']"
        ))
        .await;
    assert_eq!(
        receiver.received().len(),
        1,
        "the receiver got the test webhook"
    );

    // A webhook to the failing subscription shows red rows: a failed attempt with a retry, then the
    // final failure.
    server
        .client
        .ingest(
            &failing.id,
            r#"{"invoice":"in_1"}"#,
            IngestOptions {
                event_type: Some("invoice.paid".into()),
                signature: None,
            },
        )
        .await
        .expect("the webhook is accepted");
    browser
        .find("#feed .feed-row.failed[data-outcome='failed_attempt']")
        .await;
    browser
        .find("#feed .feed-row.failed[data-outcome='failure']")
        .await;

    // The subscription's attempts, then the delivery's full history.
    browser
        .click(&format!("{item} button[data-action='attempts']"))
        .await;
    browser
        .click(&format!(
            ".attempts-table button[data-delivery-id='{delivery_id}']"
        ))
        .await;
    browser.find(".history-table").await;
    let details = browser.text_of("#details-body").await;
    assert!(details.contains(&delivery_id), "{details}");
    assert!(details.contains("delivered"), "{details}");
    assert!(details.contains("whd.test"), "{details}");
    assert!(details.contains("success"), "{details}");

    // Back to the attempts table for the pictures.
    browser.click("#details-back").await;
    browser.find(".attempts-table").await;
    browser.screenshot(DESKTOP, "dashboard-desktop.png").await;
    browser.screenshot(PHONE, "dashboard-phone.png").await;

    // Edit the description through the form, then delete the failing subscription (two clicks).
    browser
        .click(&format!("{item} button[data-action='edit']"))
        .await;
    browser
        .type_into("#field-description", "orders service v2")
        .await;
    browser.click("#form-submit").await;
    browser
        .wait_for_text(
            &format!("{item} .subscription-description"),
            "orders service v2",
        )
        .await;
    let failing_item = format!("li[data-subscription-id='{}']", failing.id);
    browser
        .click(&format!("{failing_item} button[data-action='delete']"))
        .await;
    browser
        .click(&format!(
            "{failing_item} button[data-action='delete'].confirming"
        ))
        .await;
    eventually(DEADLINE, "the deleted subscription leaves the list", || {
        let failing_item = failing_item.clone();
        let browser = &browser;
        async move {
            let left = browser
                .client
                .find_all(Locator::Css(&failing_item))
                .await
                .ok()?;
            left.is_empty().then_some(())
        }
    })
    .await;
    assert!(server.client.get_subscription(&failing.id).await.is_err());

    browser.close().await;
    server.stop().await;
}

#[tokio::test]
async fn the_page_asks_for_the_api_token_and_then_works_with_it() {
    let token = "0123456789abcdef0123";
    let server = TestServer::start_with(&["--api-token", token]).await;
    let browser = Browser::start().await;
    browser.open(&format!("{}/", server.http_url)).await;

    browser.find("#token-panel:not([hidden])").await;
    browser.type_into("#token-input", "wrong-token-value").await;
    browser.click("#token-form button[type='submit']").await;
    let error = browser.text_of("#token-error").await;
    assert_eq!(error, "invalid API token");

    browser.type_into("#token-input", token).await;
    browser.click("#token-form button[type='submit']").await;
    browser.find("#token-panel[hidden]").await;
    // The live feed connected, which needs the token in the EventSource URL.
    browser.find("#live-status[data-state='live']").await;
    browser.find("#subscriptions-empty:not([hidden])").await;

    browser.close().await;
    server.stop().await;
}
