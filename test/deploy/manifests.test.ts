// Offline validation of the Kubernetes manifests in deploy/: every document is checked
// against the Kubernetes OpenAPI schema (kubernetes-models), then the specifics the
// agent and aggregator depend on are asserted. No cluster needed.
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments } from 'yaml';
import { DaemonSet, Deployment } from 'kubernetes-models/apps/v1';
import {
  ConfigMap,
  Namespace,
  PersistentVolumeClaim,
  Service,
  ServiceAccount,
} from 'kubernetes-models/v1';
import { ClusterRole, ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1';

// Compiled to dist/test/deploy/manifests.test.js, so the repo root is three levels up.
// SHADOWLAYER_REPO_ROOT overrides it when the test is compiled somewhere else.
const repoRoot =
  process.env['SHADOWLAYER_REPO_ROOT'] ??
  path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const deployDir = path.join(repoRoot, 'deploy');

type Obj = Record<string, unknown>;

interface ModelClass {
  readonly apiVersion: string;
  readonly kind: string;
  new (data?: never): { validate(): void };
}

const MODELS: readonly ModelClass[] = [
  Namespace,
  ServiceAccount,
  ConfigMap,
  PersistentVolumeClaim,
  Service,
  DaemonSet,
  Deployment,
  ClusterRole,
  ClusterRoleBinding,
];
const modelByType = new Map<string, ModelClass>(MODELS.map((m) => [`${m.apiVersion}/${m.kind}`, m]));

function validate(obj: Obj): void {
  const key = `${String(obj['apiVersion'])}/${String(obj['kind'])}`;
  const Model = modelByType.get(key);
  if (Model === undefined) throw new Error(`no schema model for ${key}`);
  new Model(obj as never).validate();
}

interface Manifest {
  file: string;
  obj: Obj;
}

function parseFile(file: string, version: '1.1' | '1.2'): Obj[] {
  const text = readFileSync(path.join(deployDir, file), 'utf8');
  const out: Obj[] = [];
  for (const doc of parseAllDocuments(text, { version })) {
    if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map((e) => e.message).join('; ')}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue; // empty document (e.g. trailing ---)
    assert.ok(typeof value === 'object' && !Array.isArray(value), `${file}: document is not a mapping`);
    out.push(value as Obj);
  }
  return out;
}

const yamlFiles = readdirSync(deployDir)
  .filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml')
  .sort();

const manifests: Manifest[] = yamlFiles.flatMap((file) =>
  parseFile(file, '1.2').map((obj) => ({ file, obj })),
);

// --- small typed accessors over the untyped parsed YAML ---
function get(o: unknown, ...keys: (string | number)[]): unknown {
  let cur: unknown = o;
  for (const k of keys) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string | number, unknown>)[k];
  }
  return cur;
}
function arr(o: unknown, ...keys: (string | number)[]): Obj[] {
  const v = get(o, ...keys);
  assert.ok(Array.isArray(v), `expected an array at ${keys.join('.')}`);
  return v as Obj[];
}
function find(kind: string, name: string): Obj {
  const m = manifests.find((x) => x.obj['kind'] === kind && get(x.obj, 'metadata', 'name') === name);
  assert.ok(m, `${kind}/${name} not found in deploy/`);
  return m.obj;
}
function byName(list: Obj[], name: string): Obj {
  const item = list.find((x) => x['name'] === name);
  assert.ok(item, `no entry named ${name}`);
  return item;
}
/** The container's volumeMount at mountPath together with the pod volume it refers to. */
function mountAt(podSpec: unknown, mountPath: string): { mount: Obj; volume: Obj } {
  const mount = arr(podSpec, 'containers', 0, 'volumeMounts').find((m) => m['mountPath'] === mountPath);
  assert.ok(mount, `nothing mounted at ${mountPath}`);
  const volume = byName(arr(podSpec, 'volumes'), String(mount['name']));
  return { mount, volume };
}

describe('deploy/ manifests', () => {
  it('finds the manifests', () => {
    assert.ok(yamlFiles.length >= 5, `only ${yamlFiles.join(', ')} in ${deployDir}`);
    assert.ok(manifests.length > 0);
  });

  it('every document validates against the Kubernetes schema', () => {
    for (const { file, obj } of manifests) {
      const id = `${file}: ${String(obj['kind'])}/${String(get(obj, 'metadata', 'name'))}`;
      assert.doesNotThrow(() => validate(obj), id);
    }
  });

  it('rejects an unknown apiVersion/kind', () => {
    assert.throws(() => validate({ apiVersion: 'v1', kind: 'NoSuchKind', metadata: { name: 'x' } }), /no schema model/);
  });

  it('reads the same under YAML 1.1 (kubectl) and YAML 1.2', () => {
    // kubectl parses YAML 1.1, where e.g. `yes`, `on` or `0440` mean something else.
    for (const file of yamlFiles) {
      assert.deepEqual(parseFile(file, '1.1'), parseFile(file, '1.2'), file);
    }
  });

  it('labels everything and keeps namespaced objects in the shadowlayer namespace', () => {
    const clusterScoped = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding']);
    for (const { file, obj } of manifests) {
      const id = `${file}: ${String(obj['kind'])}/${String(get(obj, 'metadata', 'name'))}`;
      assert.equal(get(obj, 'metadata', 'labels', 'app.kubernetes.io/name'), 'shadowlayer', id);
      if (clusterScoped.has(String(obj['kind']))) continue;
      assert.equal(get(obj, 'metadata', 'namespace'), 'shadowlayer', id);
    }
  });

  it('agent DaemonSet: host PID, read-only host mounts, docker socket, node name', () => {
    const ds = find('DaemonSet', 'shadowlayer-agent');
    const pod = get(ds, 'spec', 'template', 'spec');
    assert.equal(get(pod, 'hostPID'), true);
    assert.equal(get(pod, 'serviceAccountName'), 'shadowlayer-agent');
    assert.ok(
      arr(pod, 'tolerations').some((t) => t['operator'] === 'Exists' && t['key'] === undefined && t['effect'] === undefined),
      'must tolerate every taint',
    );

    const hostMounts: [string, string][] = [
      ['/proc', '/host/proc'],
      ['/sys/fs/cgroup', '/sys/fs/cgroup'],
      ['/var/lib/docker', '/var/lib/docker'],
    ];
    for (const [hostPath, mountPath] of hostMounts) {
      const { mount, volume } = mountAt(pod, mountPath);
      assert.equal(get(volume, 'hostPath', 'path'), hostPath, mountPath);
      assert.equal(mount['readOnly'], true, `${mountPath} must be readOnly`);
    }
    const sock = mountAt(pod, '/var/run/docker.sock');
    assert.equal(get(sock.volume, 'hostPath', 'path'), '/var/run/docker.sock');
    assert.equal(get(sock.volume, 'hostPath', 'type'), 'Socket');

    const tls = mountAt(pod, '/etc/shadowlayer/tls');
    assert.equal(get(tls.volume, 'secret', 'secretName'), 'shadowlayer-agent-tls');
    assert.equal(tls.mount['readOnly'], true);

    const container = arr(pod, 'containers')[0];
    const env = arr(container, 'env');
    assert.equal(get(byName(env, 'NODE_NAME'), 'valueFrom', 'fieldRef', 'fieldPath'), 'spec.nodeName');
    const nodeIdx = env.findIndex((e) => e['name'] === 'NODE_NAME');
    const slIdx = env.findIndex((e) => e['name'] === 'SHADOWLAYER_NODE');
    assert.equal(env[slIdx]?.['value'], '$(NODE_NAME)');
    assert.ok(nodeIdx < slIdx, 'NODE_NAME must be defined before SHADOWLAYER_NODE refers to it');

    const command = get(container, 'command');
    assert.ok(Array.isArray(command));
    assert.deepEqual(command.slice(0, 2), ['shadowlayer', 'agent']);
    assert.equal(command[command.indexOf('--proc-root') + 1], '/host/proc');
    // The telemetry spool lives on the node, so it survives a restarted agent pod.
    const spoolDir = command[command.indexOf('--data-dir') + 1];
    assert.equal(get(mountAt(pod, String(spoolDir)).volume, 'hostPath', 'path'), '/var/lib/shadowlayer');
    assert.equal(get(mountAt(pod, '/sys/kernel/tracing').volume, 'hostPath', 'path'), '/sys/kernel/tracing');
    assert.equal(get(container, 'securityContext', 'privileged'), true);
    assert.deepEqual(byName(arr(container, 'ports'), 'metrics')['containerPort'], 9465);
  });

  it('aggregator: one replica, Recreate, PVC-backed data, Service on 7443', () => {
    const dep = find('Deployment', 'shadowlayer-aggregator');
    assert.equal(get(dep, 'spec', 'replicas'), 1);
    assert.equal(get(dep, 'spec', 'strategy', 'type'), 'Recreate');
    const pod = get(dep, 'spec', 'template', 'spec');
    const data = mountAt(pod, '/var/lib/shadowlayer');
    const claim = get(data.volume, 'persistentVolumeClaim', 'claimName');
    assert.equal(claim, 'shadowlayer-data');
    const pvc = find('PersistentVolumeClaim', String(claim));
    assert.deepEqual(get(pvc, 'spec', 'accessModes'), ['ReadWriteOnce']);

    const tls = mountAt(pod, '/etc/shadowlayer/tls');
    assert.equal(get(tls.volume, 'secret', 'secretName'), 'shadowlayer-aggregator-tls');
    assert.equal(tls.mount['readOnly'], true);

    const container = arr(pod, 'containers')[0];
    assert.equal(get(pod, 'securityContext', 'runAsNonRoot'), true);
    assert.equal(get(container, 'securityContext', 'readOnlyRootFilesystem'), true);

    const svc = find('Service', 'shadowlayer-aggregator');
    const grpc = arr(svc, 'spec', 'ports').find((p) => p['port'] === 7443);
    assert.ok(grpc, 'Service must expose 7443');
    assert.equal(grpc['name'], 'grpc');
    // The Service must select the aggregator's pods.
    const podLabels = get(dep, 'spec', 'template', 'metadata', 'labels') as Obj;
    for (const [k, v] of Object.entries(get(svc, 'spec', 'selector') as Obj)) {
      assert.equal(podLabels[k], v, `selector ${k}`);
    }
  });

  it('kustomization.yaml lists exactly the manifests present', () => {
    const [kust, ...rest] = parseFile('kustomization.yaml', '1.2');
    assert.equal(rest.length, 0);
    const resources = get(kust, 'resources');
    assert.ok(Array.isArray(resources));
    assert.deepEqual([...(resources as string[])].sort(), yamlFiles);
  });

  it('the schema check bites: a string containerPort is rejected', () => {
    const ds = find('DaemonSet', 'shadowlayer-agent');
    const broken = structuredClone(ds);
    const port = arr(broken, 'spec', 'template', 'spec', 'containers', 0, 'ports')[0];
    assert.ok(port);
    port['containerPort'] = 'not-a-port';
    assert.doesNotThrow(() => validate(ds), 'the original must still be valid');
    assert.throws(() => validate(broken));
  });
});
