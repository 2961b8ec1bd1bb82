// One user: profile, custom/metadata/prefs, wallet and ledger, sessions, memberships, the
// activity log, the history as a timeline with the user as of any of its events, and the
// single-user commands.

import { ApiError, api, get } from './api.js';
import { h, fill, badge, time, json, table, field, select, errorBox, showError, problemView, act, confirmDialog } from './ui.js';
import { DELETE_MODES } from './users.js';

const PROFILE = ['id', 'username', 'display_name', 'name', 'email', 'email_verified', 'phone',
  'phone_verified', 'role', 'status', 'avatar_url', 'lang_tag', 'location', 'timezone',
  'created_at', 'updated_at', 'deactivated_at', 'deleted_at', 'version'];

const path = (id, rest = '') => `/v1/users/${encodeURIComponent(id)}${rest}`;

const shown = (value) => (value === null || value === undefined ? '—'
  : typeof value === 'object' ? JSON.stringify(value) : String(value));

/** The profile fields as a definition list; fields that differ from `now` are marked. */
function profile(user, now) {
  return h('dl', { class: 'profile' }, PROFILE.filter((k) => k in user).map((k) => {
    const changed = now && shown(now[k]) !== shown(user[k]);
    return [h('dt', {}, k), h('dd', { class: changed ? 'changed' : null, 'data-field': k },
      k.endsWith('_at') ? time(user[k]) : shown(user[k]), changed ? h('span', { class: 'note' }, ' (differs from now)') : null)];
  }));
}

function section(id, title, ...children) {
  return h('section', { id, class: 'card', 'aria-labelledby': `${id}-title` }, h('h2', { id: `${id}-title` }, title), ...children);
}

export async function userPage({ main, signal }, id) {
  let user;
  try {
    user = await get(path(id));
  } catch (error) {
    if (error.status === 404) {
      fill(main, h('h1', {}, 'No such user'), h('div', { class: 'problem' }, problemView(error)),
        h('p', {}, h('a', { href: '#/users' }, 'Back to the users')));
      return;
    }
    throw error;
  }

  const heading = h('h1', {});
  const summary = h('p', { class: 'summary' });
  const commands = h('div', { class: 'commands' });
  const commandBox = errorBox();
  const profileBody = h('div', {});
  const jsonBody = h('div', {});
  const wallet = h('div', {});
  const ledger = h('div', {});
  const sessions = h('div', {});
  const memberships = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const logs = h('div', {});
  const timeline = h('div', {});

  fill(main,
    h('p', { class: 'crumbs' }, h('a', { href: '#/users' }, '← Users')),
    heading, summary,
    section('commands', 'Commands', commands, commandBox),
    h('div', { class: 'columns' },
      section('profile', 'Profile', profileBody),
      section('data', 'Custom, metadata and prefs', jsonBody)),
    section('history', 'History', timeline),
    h('div', { class: 'columns' },
      section('wallet', 'Wallet', wallet, ledger),
      section('sessions', 'Sessions', sessions)),
    h('div', { class: 'columns' },
      section('memberships', 'Memberships', memberships),
      section('activity', 'Activity log', logs)));

  /** Shows the user as it is now. */
  function render(next) {
    user = next;
    fill(heading, user.display_name || user.username || user.name || user.id, ' ', badge(user.status));
    fill(summary, `id ${user.id} · version ${user.version} · organization ${user.organization_id}`);
    fill(profileBody, profile(user));
    fill(jsonBody,
      h('h3', {}, 'custom'), json(user.custom, 'custom'),
      h('h3', {}, 'metadata'), json(user.metadata, 'metadata'),
      h('h3', {}, 'prefs'), json(user.prefs, 'prefs'));
    renderCommands();
    renderWallet();
  }

  /**
   * Runs a single-user command, guarded by the version shown (a stale page gets 412), then
   * shows the user again; the focus returns to the same place among the commands (Block
   * becomes Unblock).
   */
  async function command(button, method, rest, body, query) {
    const controls = () => [...commands.querySelectorAll('button, select')];
    const at = controls().indexOf(button);
    const answer = await act(button, commandBox,
      () => api(method, path(user.id, rest), { body, query, ifMatch: user.version }));
    if (answer !== undefined) {
      await refresh();
      controls()[at]?.focus();
    }
    return answer;
  }

  async function refresh() {
    try {
      render(await get(path(user.id)));
    } catch (error) {
      if (error.status !== 404) throw error;
      fill(main, h('h1', {}, 'User deleted'),
        h('p', { role: 'status' }, `${user.id} was erased completely (hard delete).`),
        h('p', {}, h('a', { href: '#/users' }, 'Back to the users')));
      return;
    }
    await Promise.all([loadLedger(), loadSessions(), loadLogs(), loadTimeline()]);
  }

  function renderCommands() {
    const b = (label, idName, onclick, cls) => h('button', { type: 'button', id: idName, class: cls, onclick }, label);
    const s = user.status;
    const mode = select('mode', DELETE_MODES.map(([v, t]) => [v, t]), 'soft');
    const remove = async (event) => {
      const button = event.currentTarget;
      const [, title, effect] = DELETE_MODES.find(([v]) => v === mode.value);
      if (await confirmDialog(`Delete ${user.id}?`, `${title} delete: ${effect}.`, 'Delete')) {
        await command(button, 'DELETE', '', undefined, { mode: mode.value });
      }
    };
    fill(commands,
      s === 'blocked'
        ? b('Unblock', 'cmd-unblock', (e) => command(e.currentTarget, 'PATCH', '/status', { status: true }))
        : s !== 'deleted' ? b('Block', 'cmd-block', (e) => command(e.currentTarget, 'PATCH', '/status', { status: false })) : null,
      s === 'deactivated'
        ? b('Reactivate', 'cmd-reactivate', (e) => command(e.currentTarget, 'POST', '/reactivate'))
        : s !== 'deleted' ? b('Deactivate', 'cmd-deactivate', (e) => command(e.currentTarget, 'POST', '/deactivate', {})) : null,
      s === 'deleted'
        ? b('Restore', 'cmd-restore', (e) => act(e.currentTarget, commandBox,
          () => api('POST', '/v1/users/restore', { body: { user_ids: [user.id] } })).then((ok) => ok && refresh()))
        : null,
      b(user.email_verified ? 'Mark email unverified' : 'Mark email verified', 'cmd-email-verification',
        (e) => command(e.currentTarget, 'PATCH', '/verification', { email_verification: !user.email_verified })),
      b(user.phone_verified ? 'Mark phone unverified' : 'Mark phone verified', 'cmd-phone-verification',
        (e) => command(e.currentTarget, 'PATCH', '/verification/phone', { phone_verification: !user.phone_verified })),
      h('span', { class: 'delete-group' }, field('Delete mode', mode), b('Delete…', 'cmd-delete', remove, 'danger')));
  }

  // Wallet: balances, an adjustment form whose errors (wallet_negative) show beside it.
  const walletBox = errorBox();
  const currency = h('input', { name: 'currency', value: 'coins', required: true, size: 8, autocomplete: 'off' });
  const amount = h('input', { name: 'amount', type: 'number', step: 1, required: true, size: 6, placeholder: '+10 or -5' });
  const record = h('input', { type: 'checkbox', name: 'update_ledger', checked: true });
  const adjust = h('form', { class: 'inline', id: 'wallet-form' },
    field('Currency', currency), field('Change', amount), h('label', { class: 'check' }, record, ' Record in the ledger'),
    h('button', { type: 'submit' }, 'Adjust'));
  adjust.addEventListener('submit', async (event) => {
    event.preventDefault();
    const changeset = { [currency.value.trim()]: Number(amount.value) };
    const answer = await act(event.submitter, walletBox,
      () => api('POST', path(user.id, '/wallet'), { body: { changeset, update_ledger: record.checked } }));
    if (answer) {
      amount.value = '';
      await refresh();
    }
  });
  function renderWallet() {
    const balances = Object.entries(user.wallet || {});
    fill(wallet,
      table('Balances', [['Currency', ([c]) => c], ['Balance', ([, v]) => v]], balances, 'No balance yet.'),
      adjust, walletBox);
  }

  /** A list read page by page (newest first) with an "Older" button. */
  function paged(container, load, render, empty) {
    let items = [];
    const box = errorBox();
    async function more(cursor) {
      try {
        const page = await load(cursor);
        items = cursor ? items.concat(page.items) : page.items;
        fill(container, render(items, empty),
          page.next_cursor ? h('button', { type: 'button', onclick: () => more(page.next_cursor) }, 'Older') : null, box);
      } catch (error) {
        fill(container, box);
        showError(error, box);
      }
    }
    return () => more(null);
  }

  const loadLedger = paged(ledger, (cursor) => get(path(user.id, '/wallet/ledger'), { cursor }),
    (items) => table('Ledger', [['Time', (i) => time(i.create_time)], ['Change', (i) => JSON.stringify(i.changeset)],
      ['Metadata', (i) => JSON.stringify(i.metadata)]], items, 'The ledger is empty.'));

  const loadLogs = paged(logs, (cursor) => get(path(user.id, '/logs'), { cursor }),
    (items) => table('Activity', [['Time', (i) => time(i.time)], ['Event', (i) => i.event], ['Position', (i) => i.position],
      ['Actor', (i) => shown(i.actor)], ['Address', (i) => shown(i.ip)], ['User agent', (i) => shown(i.user_agent)]], items));

  const sessionBox = errorBox();
  const loadSessions = paged(sessions, async (cursor) => {
    const page = await get(path(user.id, '/sessions'), { cursor });
    return { items: page.sessions, next_cursor: page.next_cursor };
  }, (items) => h('div', {},
    table('Sessions', [['Started', (s) => time(s.created_at)], ['Method', (s) => s.method],
      ['State', (s) => (s.active ? 'active' : s.revoked_reason || 'expired')],
      ['Address', (s) => shown(s.ip)], ['User agent', (s) => shown(s.user_agent)],
      ['', (s) => (s.active ? h('button', {
        type: 'button', 'aria-label': `Revoke session ${s.id}`,
        onclick: (e) => act(e.currentTarget, sessionBox, () => api('DELETE', path(user.id, `/sessions/${encodeURIComponent(s.id)}`)))
          .then((ok) => ok !== undefined && loadSessions()),
      }, 'Revoke') : null)]], items, 'No session.'),
    items.some((s) => s.active) ? h('button', {
      type: 'button', id: 'revoke-all', class: 'danger',
      onclick: (e) => command(e.currentTarget, 'DELETE', '/sessions'),
    }, 'End every session') : null,
    sessionBox));

  // Memberships arrive with teams (planned: docs/contract.md, "Not yet available"); until then the
  // server answers 404.
  async function loadMemberships() {
    try {
      const page = await get(path(user.id, '/memberships'));
      fill(memberships, table('Memberships', [['Team', (m) => m.team_id], ['Roles', (m) => (m.roles || []).join(', ')],
        ['Joined', (m) => time(m.joined_at)]], page.memberships, 'Not a member of any team.'));
    } catch (error) {
      fill(memberships, h('p', { class: 'muted', id: 'memberships-unavailable' },
        error.status === 404 ? 'Memberships: not available on this server.' : `Memberships: ${error.message}`));
    }
  }

  // History: every event of the user; a slider and a list pick one, and the user is shown
  // as of that event's log position (GET /v1/users/{id}?as_of=<position>).
  async function loadTimeline() {
    const events = [];
    let after = 0;
    while (after !== null && events.length < 5000) {
      const page = await get(path(user.id, '/events'), { after, limit: 1000 });
      events.push(...page.events);
      after = page.next_after ?? null;
    }
    if (signal.aborted) return;
    if (!events.length) {
      fill(timeline, h('p', { class: 'muted' }, 'No event.'));
      return;
    }
    const slider = h('input', { type: 'range', id: 'history-slider', min: 0, max: events.length - 1, step: 1, value: events.length - 1 });
    const position = h('p', { id: 'history-position', role: 'status' });
    const detail = h('div', { class: 'history-detail' });
    const box = errorBox();
    const list = h('ol', { class: 'history-list', id: 'history-list' }, events.map((e, i) => h('li', {},
      h('button', { type: 'button', 'data-index': i, onclick: () => pick(i) },
        `v${e.version} ${e.type}`, h('span', { class: 'muted' }, ` #${e.position} · ${time(e.time)}`)))));
    const earlier = h('button', { type: 'button', id: 'history-earlier', onclick: () => pick(Number(slider.value) - 1) }, '◀ Earlier');
    const later = h('button', { type: 'button', id: 'history-later', onclick: () => pick(Number(slider.value) + 1) }, 'Later ▶');
    const latest = h('button', { type: 'button', id: 'history-latest', onclick: () => pick(events.length - 1) }, 'Now');
    let seq = 0;
    async function pick(index) {
      const i = Math.max(0, Math.min(events.length - 1, index));
      const mine = ++seq;
      const event = events[i];
      slider.value = String(i);
      slider.setAttribute('aria-valuetext', `event ${i + 1} of ${events.length}: ${event.type} at position ${event.position}`);
      list.querySelectorAll('button').forEach((b) => b.removeAttribute('aria-current'));
      list.querySelector(`button[data-index="${i}"]`).setAttribute('aria-current', 'step');
      position.textContent = `As of position ${event.position} (event ${i + 1} of ${events.length}, ${event.type}, ${time(event.time)})`;
      let past;
      try {
        past = await get(path(user.id), { as_of: event.position });
      } catch (error) {
        if (mine !== seq) return;
        fill(detail, box);
        showError(error, box);
        return;
      }
      if (mine !== seq) return;
      fill(detail,
        h('div', { class: 'columns' },
          h('div', {}, h('h3', {}, `The user as of position ${event.position}`), h('div', { id: 'as-of' }, profile(past, user))),
          h('div', {}, h('h3', {}, `Event ${event.type}`), json({ data: event.data, metadata: event.metadata }, 'event'))));
    }
    slider.addEventListener('input', () => pick(Number(slider.value)));
    fill(timeline,
      h('div', { class: 'history-controls' },
        h('label', { for: 'history-slider' }, 'Position in history'), slider, earlier, later, latest),
      position, list, detail);
    await pick(events.length - 1);
  }

  render(user);
  await Promise.all([loadLedger(), loadSessions(), loadLogs(), loadTimeline(), loadMemberships()]).catch((error) => {
    if (!(error instanceof ApiError)) throw error;
    showError(error, commandBox);
  });
}
