// The tasks page: the list, live progress from the event stream (TaskCreated … TaskCompleted),
// cancel, and the download of a finished export.

import { api, get, followEvents } from './api.js';
import { h, fill, badge, cell, time, field, select, errorBox, showError, clearError, act, liveIndicator } from './ui.js';

export const TASK_EVENTS = ['TaskCreated', 'TaskStarted', 'TaskProgressed', 'TaskCompleted', 'TaskFailed', 'TaskCanceled'];
const ENDED = ['completed', 'failed', 'canceled'];
const KINDS = ['deactivate_users', 'reactivate_users', 'delete_users', 'export_users', 'import_users', 'rebuild_projection'];

/** The log's head now, so a stream can start right after what a list shows. */
export async function logHead() {
  const { projections } = await get('/v1/projections');
  return Math.max(0, ...projections.map((p) => p.head));
}

/**
 * Applies the task events of the log to `tasks` (a Map of id → task as the API shows it)
 * as they arrive, calling `changed(task, event)` after each; `fetchEnded(id)` is asked for
 * the task's final form (its result) once it ends. Runs until `signal` aborts.
 */
export function watchTasks(tasks, after, changed, onState, signal) {
  followEvents({ after, types: TASK_EVENTS }, async (event) => {
    const id = event.stream.replace(/^task-/, '');
    const d = event.data;
    let task = tasks.get(id);
    if (!task) {
      if (event.type !== 'TaskCreated') return;
      task = { id, kind: d.kind, status: 'pending', progress: { done: 0, failed: 0, total: d.total },
        created_at: event.time, started_at: null, finished_at: null, result: {}, error: null };
      tasks.set(id, task);
    }
    const p = task.progress;
    switch (event.type) {
      case 'TaskStarted':
        if (!ENDED.includes(task.status)) task.status = 'running';
        task.started_at ||= event.time;
        if (d.total !== null && d.total !== undefined) p.total = d.total;
        break;
      case 'TaskProgressed':
        // A list read after the stream began may already be further: never go back.
        p.done = Math.max(p.done, d.done);
        p.failed = Math.max(p.failed, d.failed);
        break;
      case 'TaskCompleted': task.status = 'completed'; break;
      case 'TaskFailed': task.status = 'failed'; task.error = d.error; break;
      case 'TaskCanceled': task.status = 'canceled'; break;
      default: break;
    }
    task.last_event = { type: event.type, position: event.position };
    if (ENDED.includes(task.status)) {
      task.finished_at ||= event.time;
      try {
        Object.assign(task, await get(`/v1/tasks/${encodeURIComponent(id)}`, { min_position: event.position }));
      } catch { /* the event's numbers stay */ }
    }
    changed(task, event);
  }, onState, signal);
}

/** Percentage of a task's items handled. */
export function percent(task) {
  const { done, failed, total } = task.progress;
  if (task.status === 'completed') return 100;
  if (!total) return 0;
  return Math.min(100, Math.floor(((done + failed) * 100) / total));
}

/** A task's progress bar and numbers. */
export function progressView(task) {
  const { done, failed, total } = task.progress;
  const pct = percent(task);
  return h('div', { class: 'progress' },
    h('progress', { max: 100, value: pct, 'aria-label': `Progress of task ${task.id}` }),
    h('span', { class: 'pct' }, `${pct} %`),
    h('span', { class: 'muted' }, ` ${done} done, ${failed} failed of ${total ?? '?'}`));
}

/** Downloads an export's file (fetched with the key in a header, saved from a blob). */
async function download(task) {
  const response = await api('GET', `/v1/tasks/${encodeURIComponent(task.id)}/result`);
  const blob = await response.blob();
  const link = h('a', { href: URL.createObjectURL(blob), download: `roster-export-${task.id}.ndjson` });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
  return { bytes: blob.size, lines: (await blob.text()).split('\n').filter(Boolean).length };
}

export async function tasksPage({ main, signal, params }) {
  const filters = { status: params.get('status') || '', kind: params.get('kind') || '' };
  const started = params.get('started');
  const box = errorBox();
  const live = liveIndicator();
  const rows = h('tbody', {});
  const more = h('div', {});
  const status = select('status', [['', 'Any status'], ...['pending', 'running', ...ENDED].map((s) => [s, s])], filters.status);
  const kind = select('kind', [['', 'Any kind'], ...KINDS.map((k) => [k, k])], filters.kind);
  const exportAll = h('button', { type: 'button', id: 'export-all' }, 'Export all users');
  fill(main,
    h('h1', {}, 'Tasks'),
    h('div', { class: 'toolbar' }, field('Status', status), field('Kind', kind), exportAll, live),
    started ? h('p', { role: 'status', class: 'note' }, `Task ${started} started.`) : null,
    box,
    h('table', { id: 'tasks' }, h('caption', {}, 'Tasks, newest first'),
      h('thead', {}, h('tr', {}, ['Task', 'Kind', 'Status', 'Progress', 'Created', 'Finished', 'Actions'].map((t) => h('th', { scope: 'col' }, t)))),
      rows),
    more);

  const tasks = new Map();
  const rowOf = new Map();
  const wanted = (t) => (!filters.status || t.status === filters.status) && (!filters.kind || t.kind === filters.kind);

  function row(task) {
    const actions = h('div', { class: 'actions' });
    const rowBox = errorBox();
    if (['pending', 'running'].includes(task.status)) {
      actions.append(h('button', {
        type: 'button', class: 'danger', 'aria-label': `Cancel task ${task.id}`,
        onclick: async (e) => {
          const answer = await act(e.currentTarget, rowBox, () => api('POST', `/v1/tasks/${encodeURIComponent(task.id)}/cancel`));
          if (answer) show(Object.assign(task, answer));
        },
      }, 'Cancel'));
    }
    if (task.kind === 'export_users' && task.status === 'completed') {
      const note = h('span', { class: 'muted', role: 'status' });
      actions.append(h('button', {
        type: 'button', 'aria-label': `Download the export of task ${task.id}`,
        onclick: async (e) => {
          const got = await act(e.currentTarget, rowBox, () => download(task));
          if (got) note.textContent = ` Downloaded ${got.lines} ${got.lines === 1 ? 'user' : 'users'} (${got.bytes} bytes).`;
        },
      }, 'Download'), note);
    }
    const failures = task.result?.failures || [];
    return h('tr', { 'data-task': task.id, class: task.id === started ? 'highlight' : null },
      cell('Task', h('code', {}, task.id)),
      cell('Kind', task.kind),
      cell('Status', badge(task.status),
        task.last_event ? h('span', { class: 'muted last-event' }, ` live: ${task.last_event.type} #${task.last_event.position}`) : null,
        task.error ? h('div', { class: 'problem' }, task.error) : null),
      cell('Progress', progressView(task),
        failures.length ? h('details', {}, h('summary', {}, `${failures.length} failed`),
          h('ul', {}, failures.map((f) => h('li', {}, `${f.user_id}: ${f.code} — ${f.detail}`)))) : null),
      cell('Created', time(task.created_at)),
      cell('Finished', time(task.finished_at)),
      cell('Actions', actions, rowBox));
  }

  function show(task) {
    const old = rowOf.get(task.id);
    if (!wanted(task)) { old?.remove(); rowOf.delete(task.id); return; }
    const fresh = row(task);
    rowOf.set(task.id, fresh);
    if (old) old.replaceWith(fresh);
    else rows.prepend(fresh);
  }

  async function loadPage(cursor) {
    const page = await get('/v1/tasks', { ...filters, cursor, limit: 50 });
    for (const task of page.tasks) {
      if (!tasks.has(task.id)) tasks.set(task.id, task);
      const known = tasks.get(task.id);
      const fresh = row(known);
      rowOf.set(known.id, fresh);
      rows.append(fresh);
    }
    fill(more, page.next_cursor
      ? h('button', { type: 'button', onclick: (e) => act(e.currentTarget, box, () => loadPage(page.next_cursor)) }, 'Older tasks')
      : null);
  }

  const refilter = () => {
    history.replaceState(null, '', `#/tasks?${new URLSearchParams(Object.entries(filters).filter(([, v]) => v))}`);
    rows.replaceChildren();
    rowOf.clear();
    loadPage(null).catch((error) => showError(error, box));
  };
  status.addEventListener('change', () => { filters.status = status.value; refilter(); });
  kind.addEventListener('change', () => { filters.kind = kind.value; refilter(); });
  exportAll.addEventListener('click', (e) => act(e.currentTarget, box, async () => {
    const { task_id: id } = await api('POST', '/v1/users/export', { body: {} });
    const task = await get(`/v1/tasks/${encodeURIComponent(id)}`);
    // The stream may have shown it already, and further along.
    if (!tasks.has(id)) {
      tasks.set(id, task);
      show(task);
    }
  }));

  // The stream starts at the head read before the list, so nothing falls between them.
  const head = await logHead();
  await loadPage(null);
  clearError(box);
  watchTasks(tasks, head, (task) => show(task), live.update, signal);
}
