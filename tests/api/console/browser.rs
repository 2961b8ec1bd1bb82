//! A real headless Chromium driven through WebDriver (Debian's `chromium` and
//! `chromium-driver`; `make test` installs them). Each [`Browser`] has its own chromedriver on a
//! free port and its own empty profile; dropping it ends both, even when a test fails.
//!
//! There is no skipping: without Chromium these tests fail and say what to install.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::actions::{InputSource, KeyAction, KeyActions};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

/// How long a step waits for the page to show what it expects.
const PATIENCE: Duration = Duration::from_secs(20);
/// The tallest screenshot: a page longer than this is cut.
const SCREENSHOT_HEIGHT: u32 = 1600;

/// Where Debian puts them; `ROSTER_CHROMIUM` / `ROSTER_CHROMEDRIVER` point elsewhere.
fn program(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} is missing: the console's browser tests need Debian's `chromium` and \
         `chromium-driver` packages. `make test` installs them (`make test-deps`); by hand: \
         `apt-get install chromium chromium-driver` (or set {env} to another build).",
        path.display()
    );
    path
}

/// The chromedriver process; killed with every browser it started when dropped.
struct Driver {
    child: Child,
    profile: PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // A session that was not closed (a failed test) leaves Chromium running: end the
        // processes that use this test's profile directory, by their ids.
        let needle = self.profile.to_string_lossy().into_owned();
        if let Ok(entries) = std::fs::read_dir("/proc") {
            for entry in entries.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|s| s.parse::<i32>().ok())
                else {
                    continue;
                };
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmdline).contains(&needle) {
                    // SAFETY: kill(2) with a pid read from /proc, of a process this test started.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser on the console of one test server.
pub struct Browser {
    pub client: Client,
    /// `http://127.0.0.1:<port>` of the server under test.
    pub server: String,
    _dir: tempfile::TempDir,
    _driver: Driver,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Browser {
    /// Starts chromedriver and a headless Chromium 1280 px wide, on the console of `server`.
    pub async fn open(server: &str) -> Self {
        let chromium = program("ROSTER_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = program("ROSTER_CHROMEDRIVER", "/usr/bin/chromedriver");
        let dir = tempfile::tempdir().expect("temp dir");
        let profile = dir.path().join("profile");
        let log = dir.path().join("chromedriver.log");
        let port = free_port();
        let child = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", chromedriver.display()));
        let driver = Driver {
            child,
            profile: profile.clone(),
        };
        let webdriver = format!("http://127.0.0.1:{port}");
        wait_until_ready(&webdriver, &log).await;

        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                // As root on a closed network: no sandbox, and none of Chromium's own traffic.
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--hide-scrollbars",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "Chromium did not start through chromedriver: {e}\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        Browser {
            client,
            server: server.to_owned(),
            _dir: dir,
            _driver: driver,
        }
    }

    /// Opens the console at `fragment` (`#/users`, …).
    pub async fn goto(&self, fragment: &str) {
        let url = format!("{}/console{fragment}", self.server);
        self.client.goto(&url).await.expect("navigation");
    }

    /// Changes the fragment as a link would (the page stays loaded).
    pub async fn navigate(&self, fragment: &str) {
        self.js("location.hash = arguments[0]", vec![json!(fragment)])
            .await;
    }

    /// Opens the console and signs in with `key`; waits for the users page.
    pub async fn sign_in(&self, key: &str) {
        self.goto("").await;
        self.type_into("#api-key", key).await;
        self.click("#signin button[type=submit]").await;
        self.find("#users-total").await;
    }

    /// The first element matching `css`, once there is one.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css} within {PATIENCE:?}: {e}"))
    }

    /// Every element matching `css` now.
    pub async fn all(&self, css: &str) -> Vec<Element> {
        self.client
            .find_all(Locator::Css(css))
            .await
            .expect("find_all")
    }

    /// Waits until `css` matches an element whose text contains `needle`; returns its text.
    pub async fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut seen = Vec::new();
        loop {
            seen.clear();
            for element in self.all(css).await {
                // An element replaced meanwhile is looked up again on the next round.
                if let Ok(text) = element.text().await {
                    if text.contains(needle) {
                        return text;
                    }
                    seen.push(text);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {css} showing {needle:?} within {PATIENCE:?}; shown: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `script` (a function body) returns true.
    pub async fn wait_js(&self, script: &str, what: &str) {
        let deadline = Instant::now() + PATIENCE;
        while self.js(script, vec![]).await != json!(true) {
            assert!(Instant::now() < deadline, "{what} within {PATIENCE:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        element.clear().await.expect("clear");
        element.send_keys(text).await.expect("send keys");
    }

    pub async fn select(&self, css: &str, value: &str) {
        self.find(css)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| panic!("select {value} in {css}: {e}"));
    }

    /// Runs a script in the page (a function body; `arguments` are `args`).
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Presses and releases one key, wherever the focus is.
    pub async fn press(&self, key: Key) {
        let actions = KeyActions::new("keyboard".into())
            .then(KeyAction::Down { value: key.into() })
            .then(KeyAction::Up { value: key.into() });
        self.client
            .perform_actions(actions)
            .await
            .expect("key press");
    }

    /// Presses Tab until the focused element matches `css` (at most `limit` times).
    pub async fn tab_to(&self, css: &str, limit: usize) {
        for _ in 0..limit {
            self.press(Key::Tab).await;
            let here = self
                .js(
                    "return document.activeElement.matches(arguments[0])",
                    vec![json!(css)],
                )
                .await;
            if here == json!(true) {
                return;
            }
        }
        panic!("Tab never reached {css} in {limit} presses");
    }

    /// Resizes the window (the viewport is the window in headless mode).
    pub async fn resize(&self, width: u32, height: u32) {
        self.client
            .set_window_size(width, height)
            .await
            .expect("window size");
        self.wait_js(
            &format!("return window.innerWidth === {width}"),
            &format!("the viewport is {width} px wide"),
        )
        .await;
    }

    /// Asserts that nothing sticks out of the viewport sideways: the page does not scroll
    /// horizontally, and no element reaches past the right edge unless a scroll container
    /// of its own (a JSON block) holds it. The viewport must be `expected` px wide.
    pub async fn assert_fits(&self, page: &str, expected: u64) {
        let report = self
            .js(
                r#"
                const width = document.documentElement.clientWidth;
                const clipped = (el) => {
                  for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
                    if (getComputedStyle(p).overflowX !== 'visible') return true;
                  }
                  return false;
                };
                const wide = [];
                for (const el of document.querySelectorAll('body *')) {
                  const r = el.getBoundingClientRect();
                  if (r.width === 0 && r.height === 0) continue;
                  if (r.right > width + 1 && !clipped(el)) {
                    wide.push(`${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}.${el.className} right=${Math.round(r.right)}`);
                  }
                }
                return { width, scroll: document.documentElement.scrollWidth, wide: wide.slice(0, 8) };
                "#,
                vec![],
            )
            .await;
        let width = report["width"].as_u64().expect("width");
        assert_eq!(width, expected, "{page}: the viewport's width");
        let scroll = report["scroll"].as_u64().expect("scroll width");
        assert!(
            scroll <= width && report["wide"].as_array().is_some_and(|w| w.is_empty()),
            "{page} overflows a {width} px viewport (scroll width {scroll}): {}",
            report["wide"]
        );
    }

    /// Every visible control that can take the focus (links, buttons, fields, summaries,
    /// JSON blocks), each marked with `data-kb=<index>`; returns their count. What a closed
    /// `<details>` holds is not visible (its summary is, and Enter opens it).
    pub async fn mark_focusable(&self) -> usize {
        let count = self
            .js(
                r#"
                const all = [...document.querySelectorAll('a[href], button, input, select, textarea, summary, [tabindex]')]
                  .filter((el) => !el.disabled && el.tabIndex >= 0
                    && el.checkVisibility({ visibilityProperty: true, contentVisibilityAuto: true }));
                all.forEach((el, i) => { el.dataset.kb = String(i); });
                return all.length;
                "#,
                vec![],
            )
            .await;
        count.as_u64().expect("count") as usize
    }

    /// Puts the focus on the page's first control (its skip link), as after a fresh load.
    pub async fn reset_focus(&self) {
        self.js("document.querySelector('a.skip').focus()", vec![])
            .await;
    }

    /// Indices (`data-kb`) of the controls the focus visits from the top of the page while
    /// Tab is pressed `presses` times.
    pub async fn tab_through(&self, presses: usize) -> std::collections::BTreeSet<usize> {
        self.reset_focus().await;
        let mut seen = std::collections::BTreeSet::new();
        for press in 0..=presses {
            if press > 0 {
                self.press(Key::Tab).await;
            }
            let index = self
                .js("return document.activeElement?.dataset?.kb ?? null", vec![])
                .await;
            if let Some(i) = index.as_str().and_then(|s| s.parse().ok()) {
                seen.insert(i);
            }
        }
        seen
    }

    /// Describes the controls (by `data-kb`) for a failure message.
    pub async fn describe(&self, indices: &[usize]) -> Value {
        self.js(
            "return arguments[0].map((i) => { const el = document.querySelector(`[data-kb=\"${i}\"]`); \
             return el ? `${el.tagName.toLowerCase()}#${el.id} ${el.textContent.slice(0, 40)}` : i; })",
            vec![json!(indices)],
        )
        .await
    }

    /// Saves a PNG of the viewport as `<dir>/<name>.png` when `ROSTER_CONSOLE_SCREENSHOTS`
    /// names a directory (relative to the workspace root), e.g. `docs/console`.
    pub async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("ROSTER_CONSOLE_SCREENSHOTS") else {
            return;
        };
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        // The whole page (up to a limit) from its top, with no focus ring or caret, once the
        // last change has painted; then the window as it was. (Headless, the window is the
        // viewport: no frame around it.)
        let size = self
            .js(
                "document.activeElement?.blur(); window.scrollTo(0, 0); \
                 return [window.innerWidth, window.innerHeight, document.documentElement.scrollHeight]",
                vec![],
            )
            .await;
        let [width, height, page] = [0, 1, 2].map(|i| size[i].as_u64().expect("size") as u32);
        let tall = page.clamp(height, SCREENSHOT_HEIGHT);
        self.client
            .set_window_size(width, tall)
            .await
            .expect("window size");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
        self.resize(width, height).await;
    }

    /// Ends the session (Chromium exits); the driver stops when dropped.
    pub async fn close(self) {
        let Browser {
            client,
            _dir,
            _driver,
            ..
        } = self;
        let _ = client.close().await;
    }
}

/// Waits until chromedriver answers `/status` as ready.
async fn wait_until_ready(webdriver: &str, log: &Path) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(response) = http.get(format!("{webdriver}/status")).send().await
            && let Ok(body) = response.json::<Value>().await
            && body["value"]["ready"] == json!(true)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "chromedriver did not start: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
