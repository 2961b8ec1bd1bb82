// Operator pages: the event log live, the projections (lag and rebuild), and the
// organization's settings.

import { api, get, followEvents, session } from './api.js';
import { h, fill, badge, time, json, table, field, select, errorBox, showError, act, confirmDialog, liveIndicator } from './ui.js';
import { TASK_EVENTS, logHead, watchTasks, progressView } from './tasks.js';

const EVENT_TYPES = [
  ['Users', ['UserCreated', 'UserReplaced', 'UserPartiallyUpdated', 'NameChanged', 'EmailChanged',
    'PhoneChanged', 'PasswordChanged', 'PrefsUpdated', 'VerificationChanged', 'StatusChanged',
    'WalletAdjusted', 'UserDeactivated', 'UserReactivated', 'UserDeleted', 'UserRestored']],
  ['Sessions', ['SessionStarted', 'SessionRefreshed', 'SessionRevoked', 'SessionsRevoked']],
  ['Tasks', TASK_EVENTS],
  ['Organization', ['SettingsChanged']],
];
/** Most events the page keeps on screen. */
const KEEP = 500;
/** Events shown from before the page opened. */
const BACKLOG = 50;

export async function eventsPage({ main, signal }) {
  const box = errorBox();
  const live = liveIndicator();
  const log = h('ul', { class: 'event-log', id: 'event-log' });
  const count = h('span', { class: 'muted', id: 'event-count' });
  const userId = h('input', { name: 'user_id', autocomplete: 'off', spellcheck: 'false', size: 16 });
  const others = h('input', { name: 'other_types', autocomplete: 'off', spellcheck: 'false', placeholder: 'TeamCreated, …' });
  const groups = EVENT_TYPES.map(([group, types]) => h('fieldset', { class: 'types' }, h('legend', {}, group),
    types.map((t) => h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'types', value: t }), ` ${t}`))));
  const pause = h('button', { type: 'button', id: 'events-pause' }, 'Pause');
  const form = h('form', { class: 'event-filters', id: 'event-filters' },
    h('p', { class: 'muted' }, 'No type ticked: every event. The list starts with the last events before the page opened and grows as events are written.'),
    h('div', { class: 'type-groups' }, groups),
    h('div', { class: 'toolbar' }, field('Other types (comma separated)', others), field('Only user id', userId),
      h('button', { type: 'submit' }, 'Apply filters'), pause, live, count));
  fill(main, h('h1', {}, 'Event log'), form, box, log);

  let stream = null;
  let last = Math.max(0, (await logHead()) - BACKLOG);
  let shown = 0;

  function entry(e) {
    const user = e.stream.startsWith('user-') ? e.stream.slice(5) : null;
    return h('li', { 'data-position': e.position, 'data-type': e.type },
      h('details', {},
        h('summary', {}, h('span', { class: 'pos' }, `#${e.position}`), ' ', h('strong', {}, e.type), ' ',
          h('span', { class: 'stream' }, e.stream), h('span', { class: 'muted' }, ` ${time(e.time)} · ${e.metadata?.actor ?? ''}`)),
        user ? h('p', {}, h('a', { href: `#/users/${encodeURIComponent(user)}` }, `Open user ${user}`)) : null,
        json({ data: e.data, metadata: e.metadata }, `event ${e.position}`)));
  }

  function follow() {
    stream?.abort();
    stream = new AbortController();
    signal.addEventListener('abort', () => stream.abort(), { once: true });
    const types = [...form.querySelectorAll('input[name=types]:checked')].map((c) => c.value)
      .concat(others.value.split(',').map((t) => t.trim()).filter(Boolean));
    const query = { after: last, types, user_id: userId.value.trim() };
    followEvents(query, (e) => {
      last = Math.max(last, e.position);
      log.prepend(entry(e));
      shown += 1;
      while (log.childElementCount > KEEP) log.lastElementChild.remove();
      count.textContent = `${shown} ${shown === 1 ? 'event' : 'events'} received`;
    }, (state, error) => {
      live.update(state, error);
      if (state === 'stopped' && error) showError(error, box);
    }, stream.signal);
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    box.hidden = true;
    log.replaceChildren();
    shown = 0;
    count.textContent = '';
    last = Math.max(0, last - BACKLOG);
    follow();
  });
  pause.addEventListener('click', () => {
    if (pause.textContent === 'Pause') {
      stream?.abort();
      live.update('paused');
      pause.textContent = 'Resume';
    } else {
      pause.textContent = 'Pause';
      follow();
    }
  });
  follow();
}

export async function projectionsPage({ main, signal }) {
  const box = errorBox();
  const body = h('div', {});
  const rebuilds = h('div', { id: 'rebuilds' });
  const refresh = h('button', { type: 'button', id: 'projections-refresh' }, 'Refresh');
  fill(main, h('h1', {}, 'Projections'),
    h('p', {}, 'The read models this server answers from: the log position each has applied, how far behind the log it is, and its rebuild.'),
    h('div', { class: 'toolbar' }, refresh), box, body, rebuilds);

  const tasks = new Map();
  let watching = false;

  async function load() {
    const list = await get('/v1/projections');
    fill(body,
      h('p', { class: 'muted' }, `Server ${list.server_id}`),
      table('Projections', [
        ['Name', (p) => h('code', {}, p.name)], ['Status', (p) => badge(p.status)],
        ['Position', (p) => p.position], ['Head', (p) => p.head], ['Lag', (p) => h('span', { class: 'lag' }, p.lag)],
        ['Models', (p) => p.models.join(', ')],
        ['Rebuild', (p) => (p.rebuild
          ? `${p.rebuild.phase}: ${p.rebuild.done} of ${p.rebuild.total} events`
          : h('button', { type: 'button', 'data-rebuild': p.name, onclick: (e) => rebuild(e.currentTarget, p.name) }, 'Rebuild'))],
        ['Error', (p) => p.error ?? '—'],
      ], list.projections));
  }

  async function rebuild(button, name) {
    const sure = await confirmDialog(`Rebuild ${name}?`,
      'Fresh read models are built from the log beside the live ones, which keep answering; the server switches once they have caught up.', 'Rebuild');
    if (!sure) return;
    const head = await logHead().catch(() => 0);
    const accepted = await act(button, box, () => api('POST', `/v1/projections/${encodeURIComponent(name)}/rebuild`));
    if (!accepted) return;
    const task = await get(`/v1/tasks/${encodeURIComponent(accepted.task_id)}`);
    tasks.set(task.id, task);
    showTask(task);
    if (!watching) {
      watching = true;
      watchTasks(tasks, head, (t) => {
        showTask(t);
        if (['completed', 'failed', 'canceled'].includes(t.status)) load().catch((error) => showError(error, box));
      }, () => {}, signal);
    }
    await load();
  }

  function showTask(task) {
    const el = h('p', { 'data-task': task.id }, `Rebuild task ${task.id}: `, badge(task.status), ' ', progressView(task));
    const old = rebuilds.querySelector(`[data-task="${task.id}"]`);
    if (old) old.replaceWith(el);
    else rebuilds.append(el);
  }

  refresh.addEventListener('click', (e) => act(e.currentTarget, box, load));
  await load();
}

export async function settingsPage({ main }) {
  const box = errorBox();
  const saved = h('p', { role: 'status', id: 'settings-saved' });
  const settings = await get('/v1/settings');
  const teams = await get('/v1/teams', { limit: 1 }).then(() => true, () => false);
  const controls = {};
  const rows = Object.entries(settings).filter(([k]) => k !== 'position').map(([name, value]) => {
    if (name === 'enforce_unique_usernames') {
      const options = [['app', 'app: unique in the organization'], ['no', 'no: duplicates allowed']];
      if (teams || value === 'team') options.push(['team', 'team: unique among team mates']);
      controls[name] = select(name, options, value);
      return field('Unique usernames', controls[name]);
    }
    if (typeof value === 'boolean') {
      controls[name] = h('input', { type: 'checkbox', name, checked: value });
      return h('label', { class: 'check' }, controls[name], ` ${name}`);
    }
    return h('p', {}, h('code', {}, name), ` ${JSON.stringify(value)}`);
  });
  const form = h('form', { class: 'settings', id: 'settings-form' }, rows, h('button', { type: 'submit' }, 'Save settings'), box, saved);
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const change = {};
    for (const [name, control] of Object.entries(controls)) {
      const value = control.type === 'checkbox' ? control.checked : control.value;
      if (value !== settings[name]) change[name] = value;
    }
    saved.textContent = '';
    const answer = await act(event.submitter, box, () => api('PATCH', '/v1/settings', { body: change }));
    if (answer) {
      Object.assign(settings, answer);
      saved.textContent = `Saved (log position ${answer.position}).`;
    }
  });

  const ready = await fetch(new URL('../readyz', import.meta.url)).then((r) => r.json()).catch(() => null);
  fill(main,
    h('h1', {}, 'Settings'),
    h('section', { class: 'card' }, h('h2', {}, `Organization ${session.org}`),
      h('p', {}, 'Every page acts in this organization (the x-organization-id header). Switch with the picker at the top; organizations used in this tab:'),
      h('ul', { class: 'orgs' }, session.orgs.map((org) => h('li', {}, h('code', {}, org)))),
      form),
    h('section', { class: 'card' }, h('h2', {}, 'This server'),
      ready ? table('Readiness', [['Status', (r) => r.status], ['Log position', (r) => r.log_position],
        ['Projection position', (r) => r.projection_position], ['Lag', (r) => r.projection_lag]], [ready]) : null,
      h('p', {}, h('a', { href: '../docs' }, 'API reference'), ' · ', h('a', { href: '../openapi.json' }, 'OpenAPI document'))),
    h('section', { class: 'card' }, h('h2', {}, 'Your key'),
      h('p', {}, 'The server API key is kept in this browser tab only (sessionStorage) and sent in the Authorization header.'),
      h('button', { type: 'button', id: 'sign-out', onclick: () => document.dispatchEvent(new Event('console:signout')) }, 'Sign out')));
}
