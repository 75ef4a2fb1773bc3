#!/usr/bin/env node
// IAM check: proves that each Lambda function's role in the SAM template allows exactly the
// AWS calls its code makes.
//
// The Rust test suite records every AWS call each function makes, one JSON line per IAM
// authorization: {"function", "action", "resource", "context"}. This tool
//   1. replays every recorded call (deduplicated) against its function's role and fails on
//      any call the role does not allow;
//   2. fails on any action of any statement, on any of its resources, that allowed no
//      recorded call, and on any NotAction, NotResource or "*" (except statements that only
//      name the stream and on-failure queue of the function's own DynamoDB event, which
//      Lambda's event source mapping uses with the role, not the code; those may hold only
//      the actions the mapping needs);
//   3. fails on a list of requests the roles must deny (least privilege): the key checkers
//      write only usage items kept by environment, the exported authorizer only its own
//      environment's, the publisher updates and scheduled rotation queries only
//      usage partitions, no LeadingKeys condition admits a key's own items, only the rotating
//      functions touch secrets and only under the prefix, and Console and Hello may make no
//      call at all;
//   4. with --mutations, also proves the check has teeth: four small breakages of the
//      template must each make it fail the way that breakage should.
// Policies are evaluated by @cloud-copilot/iam-simulate; nothing here matches policies by
// hand. The template's intrinsics are resolved for one stack named "keyward" in account
// 123456789012, us-east-1, and the recorded calls are mapped onto that stack's resources.
// A ForAllValues condition holds when its key is absent, so a call is only as well checked as
// its recorded context: item-level DynamoDB calls must carry dynamodb:LeadingKeys.
//
// Usage: node tests/iam/check.mjs --template infra/template.yaml --calls DIR
//          [--explain] [--mutations]

import { existsSync, readFileSync, readdirSync } from 'node:fs'
import { join } from 'node:path'
import { isDeepStrictEqual, parseArgs } from 'node:util'
import { runSimulation } from '@cloud-copilot/iam-simulate'
import { parseDocument } from 'yaml'

const ACCOUNT = '123456789012'
const REGION = 'us-east-1'
const STACK = 'keyward'
const PSEUDO_PARAMETERS = {
  'AWS::Partition': 'aws',
  'AWS::Region': REGION,
  'AWS::AccountId': ACCOUNT,
  'AWS::StackName': STACK,
  'AWS::URLSuffix': 'amazonaws.com',
}
// Parameters without a Default, and the value the check deploys them with.
const AUTHORIZER_ENVIRONMENT = 'production'
const PARAMETER_VALUES = { AuthorizerEnvironment: AUTHORIZER_ENVIRONMENT }
// Environments other than the exported authorizer's.
const OTHER_ENVIRONMENTS = ['staging', `${AUTHORIZER_ENVIRONMENT}-eu`]
const STREAM_LABEL = '2026-01-01T00:00:00.000'
const NO_VALUE = Symbol('AWS::NoValue')

// The stack's resources that the recorded calls' random names stand for.
const TABLE = 'Table'
const EVENT_BUS = 'EventBus'

// Least privilege: who may do what (check 3).
const KEY_CHECKERS = ['Authorizer', 'ApiAuthorizer', 'VerifyKey']
// ReportLeak rotates a leaked default key, whose rotation policy delivers the successor.
const SECRET_WRITERS = ['RotateKey', 'ScheduledRotation', 'ReportLeak']
const NO_AWS_CALLS = ['Console', 'Hello']
// Beside the key checkers, what may touch only usage partitions: the publisher moves a key's
// last use forward, and scheduled rotation reads a key's hourly usage.
const USAGE_ONLY = [['ActivityPublisher', 'dynamodb:UpdateItem'], ['ScheduledRotation', 'dynamodb:Query']]
const ITEM_WRITES = ['PutItem', 'UpdateItem', 'DeleteItem', 'BatchWriteItem', 'ConditionCheckItem']
// What Lambda's event source mapping does with the function's role: reads the stream, and
// sends a failed batch's record to the on-failure queue.
const MAPPING_STREAM_ACTIONS = ['dynamodb:DescribeStream', 'dynamodb:GetRecords', 'dynamodb:GetShardIterator',
  'dynamodb:ListStreams']
const MAPPING_QUEUE_ACTIONS = ['sqs:SendMessage']
// The DynamoDB actions IAM evaluates dynamodb:LeadingKeys for, which a record must carry.
const ITEM_LEVEL = new Set(['GetItem', 'PutItem', 'UpdateItem', 'DeleteItem', 'ConditionCheckItem',
  'BatchGetItem', 'BatchWriteItem', 'Query'].map((a) => `dynamodb:${a}`))
const SECRET_ACTIONS = ['CreateSecret', 'PutSecretValue', 'DescribeSecret', 'UpdateSecretVersionStage', 'GetSecretValue',
  'DeleteSecret', 'TagResource']

/** An expected problem (bad input or template shape): printed as a message, not a stack. */
class Fail extends Error {}

// ---------------------------------------------------------------------------------------
// The template

/** The YAML tags of CloudFormation's short forms, each as its long form {Fn::X: ...}. */
const SHORT_FORMS = ['And', 'Base64', 'Cidr', 'Condition', 'Equals', 'FindInMap', 'GetAZs', 'GetAtt',
  'If', 'ImportValue', 'Join', 'Length', 'Not', 'Or', 'Ref', 'Select', 'Split', 'Sub', 'ToJsonString', 'Transform']

const CFN_TAGS = SHORT_FORMS.flatMap((short) => {
  const key = short === 'Ref' || short === 'Condition' ? short : `Fn::${short}`
  const longForm = (value) =>
    ({ [key]: short === 'GetAtt' && typeof value === 'string' ? splitAtFirstDot(value) : value })
  return [
    { tag: `!${short}`, resolve: (text) => longForm(text) },
    { tag: `!${short}`, collection: 'seq', resolve: (seq) => longForm(seq.toJSON()) },
    { tag: `!${short}`, collection: 'map', resolve: (map) => longForm(map.toJSON()) },
  ]
})

function splitAtFirstDot(text) {
  const dot = text.indexOf('.')
  return dot < 0 ? [text] : [text.slice(0, dot), text.slice(dot + 1)]
}

function loadTemplate(path) {
  const doc = parseDocument(readFileSync(path, 'utf8'), { customTags: CFN_TAGS })
  const problems = [...doc.errors, ...doc.warnings] // an unknown tag is only a warning
  if (problems.length) throw new Fail(`${path}: ${problems.map((p) => p.message.split('\n')[0].replace(/:$/, '')).join('; ')}`)
  return doc.toJS()
}

/** What Ref and GetAtt give for the resource types that policies may name. */
const RESOURCE_TYPES = {
  'AWS::DynamoDB::Table': { nameProperty: 'TableName', model: (name) => {
    const arn = `arn:aws:dynamodb:${REGION}:${ACCOUNT}:table/${name}`
    return { ref: name, attributes: { Arn: arn, StreamArn: `${arn}/stream/${STREAM_LABEL}` } }
  } },
  'AWS::Events::EventBus': { nameProperty: 'Name', model: (name) => (
    { ref: name, attributes: { Arn: `arn:aws:events:${REGION}:${ACCOUNT}:event-bus/${name}`, Name: name } }
  ) },
  'AWS::SQS::Queue': { nameProperty: 'QueueName', model: (name) => {
    const url = `https://sqs.${REGION}.amazonaws.com/${ACCOUNT}/${name}`
    return { ref: url, attributes: { Arn: `arn:aws:sqs:${REGION}:${ACCOUNT}:${name}`, QueueName: name, QueueUrl: url } }
  } },
}

/** Returns resolve(value): value with every intrinsic function replaced by its value. */
function makeResolver(template) {
  const parameters = template.Parameters ?? {}
  const resources = template.Resources ?? {}
  const conditions = template.Conditions ?? {}

  function ref(name) {
    if (name === 'AWS::NoValue') return NO_VALUE
    if (name in PSEUDO_PARAMETERS) return PSEUDO_PARAMETERS[name]
    if (name in parameters) {
      const value = PARAMETER_VALUES[name] ?? parameters[name].Default
      if (value === undefined) throw new Fail(`parameter ${name} has no Default and no value here`)
      return value
    }
    return resourceModel(name).ref
  }

  function getAtt(argument) {
    const [name, attribute] = typeof argument === 'string' ? splitAtFirstDot(argument) : argument
    const value = resourceModel(name).attributes[attribute]
    if (value === undefined) throw new Fail(`cannot resolve GetAtt ${name}.${attribute}`)
    return value
  }

  function resourceModel(name) {
    const resource = resources[name]
    const type = RESOURCE_TYPES[resource?.Type]
    if (!type) throw new Fail(`cannot resolve Ref or GetAtt of ${name} (${resource?.Type ?? 'no such resource'})`)
    const explicit = resource.Properties?.[type.nameProperty]
    return type.model(explicit === undefined ? `${STACK}-${name}` : resolve(explicit))
  }

  function sub(argument) {
    const [text, variables] = Array.isArray(argument) ? [argument[0], resolve(argument[1] ?? {})] : [argument, {}]
    return text.replace(/\$\{([^}]*)\}/g, (_, name) => {
      if (name.startsWith('!')) return `\${${name.slice(1)}}`
      if (name in variables) return String(variables[name])
      return String(name.includes('.') ? getAtt(splitAtFirstDot(name)) : ref(name))
    })
  }

  function condition(name) {
    if (!(name in conditions)) throw new Fail(`no condition ${name}`)
    return truth(conditions[name])
  }

  function truth(expression) {
    const value = typeof expression?.Condition === 'string' ? condition(expression.Condition) : resolve(expression)
    if (typeof value !== 'boolean') throw new Fail(`not a condition: ${JSON.stringify(expression)}`)
    return value
  }

  const INTRINSICS = {
    Ref: ref,
    'Fn::GetAtt': getAtt,
    'Fn::Sub': sub,
    'Fn::Join': ([delimiter, list]) => resolve(list).join(delimiter),
    'Fn::Select': ([index, list]) => {
      const items = resolve(list)
      const i = Number(resolve(index))
      if (!(i >= 0 && i < items.length)) throw new Fail(`Fn::Select index ${i} out of range`)
      return items[i]
    },
    'Fn::Split': ([delimiter, text]) => resolve(text).split(delimiter),
    'Fn::If': ([name, whenTrue, whenFalse]) => resolve(condition(name) ? whenTrue : whenFalse),
    'Fn::Equals': ([a, b]) => String(resolve(a)) === String(resolve(b)),
    'Fn::Not': ([expression]) => !truth(expression),
    'Fn::And': (expressions) => expressions.every(truth),
    'Fn::Or': (expressions) => expressions.some(truth),
  }

  function resolve(value) {
    if (Array.isArray(value)) return value.map(resolve).filter((v) => v !== NO_VALUE)
    if (value === null || typeof value !== 'object') return value
    const keys = Object.keys(value)
    if (keys.length === 1 && (keys[0] === 'Ref' || keys[0].startsWith('Fn::'))) {
      const intrinsic = INTRINSICS[keys[0]]
      if (!intrinsic) throw new Fail(`cannot resolve ${keys[0]}: ${JSON.stringify(value)}`)
      return intrinsic(value[keys[0]])
    }
    return Object.fromEntries(
      Object.entries(value).map(([k, v]) => [k, resolve(v)]).filter(([, v]) => v !== NO_VALUE),
    )
  }

  return resolve
}

/** The template's functions by logical id. */
function serverlessFunctions(template) {
  return Object.fromEntries(
    Object.entries(template.Resources ?? {}).filter(([, r]) => r.Type === 'AWS::Serverless::Function'),
  )
}

/** A function's role: its statements, each with an id, and what its event source mapping uses. */
function loadRole(name, fn, resolve) {
  const properties = fn.Properties ?? {}
  const policies = [].concat(resolve(properties.Policies) ?? [])
  const statements = policies.flatMap((policy, i) => {
    const inline = policy !== null && typeof policy === 'object' && 'Statement' in policy &&
      Object.keys(policy).every((k) => k === 'Statement' || k === 'Version')
    if (!inline) {
      throw new Fail(`${name}: Policies element ${i + 1} is not an inline {Statement: [...]} policy ` +
        `(${JSON.stringify(policy)}); this check cannot evaluate SAM policy templates or managed policies`)
    }
    return [].concat(policy.Statement)
  }).map((statement, i) => ({ id: statement.Sid ?? `${name}#${i + 1}`, statement }))

  // iam-simulate names a statement by its Sid, else by its 1-based index in the policy.
  const bySimulatorId = new Map()
  statements.forEach(({ id, statement }, i) => {
    const simulatorId = statement.Sid ?? String(i + 1)
    if (bySimulatorId.has(simulatorId)) throw new Fail(`${name}: two statements are both named ${simulatorId}`)
    bySimulatorId.set(simulatorId, id)
  })

  const mappingResources = new Set(Object.values(properties.Events ?? {})
    .filter((event) => event.Type === 'DynamoDB')
    .flatMap((event) => [event.Properties?.Stream, event.Properties?.DestinationConfig?.OnFailure?.Destination])
    .filter((value) => value !== undefined)
    .map(resolve))

  return { name, hasPolicies: 'Policies' in properties, statements, bySimulatorId, mappingResources }
}

/** Everything the checks need from one template. */
function describeStack(template) {
  const resolve = makeResolver(template)
  const roles = new Map(Object.entries(serverlessFunctions(template))
    .map(([name, fn]) => [name, loadRole(name, fn, resolve)]))
  return {
    roles,
    tableName: resolve({ Ref: TABLE }),
    tableArn: resolve({ 'Fn::GetAtt': [TABLE, 'Arn'] }),
    busName: resolve({ Ref: EVENT_BUS }),
    secretPrefix: resolve({ Ref: 'SecretNamePrefix' }),
  }
}

// ---------------------------------------------------------------------------------------
// The call log

function readCalls(dir) {
  if (!existsSync(dir)) throw new Fail(`no such directory: ${dir}`)
  const files = readdirSync(dir).filter((f) => f.endsWith('.jsonl')).sort()
  return files.flatMap((file) => readFileSync(join(dir, file), 'utf8').split('\n')
    .map((line, i) => ({ line, where: `${file}:${i + 1}` }))
    .filter(({ line }) => line.trim() !== '')
    .map(({ line, where }) => parseCall(line, where)))
}

function parseCall(line, where) {
  let call
  try {
    call = JSON.parse(line)
  } catch (error) {
    throw new Fail(`${where}: not JSON: ${error.message}`)
  }
  const context = call.context ?? {}
  const valid = (call.function === null || typeof call.function === 'string') &&
    typeof call.action === 'string' && typeof call.resource === 'string' && call.resource.startsWith('arn:') &&
    typeof context === 'object' && !Array.isArray(context) &&
    Object.values(context).every((v) => typeof v === 'string' || (Array.isArray(v) && v.every((s) => typeof s === 'string')))
  if (!valid) throw new Fail(`${where}: not a call record: ${line}`)
  // A ForAllValues condition holds for an empty or absent set, so an item-level call without
  // its partition keys would pass any LeadingKeys condition unchecked.
  const leading = context['dynamodb:LeadingKeys']
  if (call.function !== null && ITEM_LEVEL.has(call.action) && !(Array.isArray(leading) && leading.length > 0)) {
    throw new Fail(`${where}: ${call.action} recorded without dynamodb:LeadingKeys: ${line}`)
  }
  return { function: call.function, action: call.action, resource: call.resource, context, where }
}

/** The ARN as it is on the stack: its region and account, and the stack's table and bus. */
function normaliseResource(arn, stack) {
  const [prefix, partition, service, , , ...rest] = arn.split(':')
  let resource = rest.join(':')
  if (service === 'dynamodb') resource = resource.replace(/^table\/[^/]+/, `table/${stack.tableName}`)
  // Tests publish to buses of their own (keyward serve to `default`); deployed, the publisher
  // is given the stack's, which tests/infra.rs checks.
  if (service === 'events') resource = resource.replace(/^event-bus\/[^/]+$/, `event-bus/${stack.busName}`)
  // Tests keep the token shared with GitLab in a secret of their own, named as the stack
  // names its own (`<stack>-gitlab-revocation-token`).
  if (service === 'secretsmanager') resource = resource.replace(/^secret:[^:]*-gitlab-revocation-token-/, `secret:${STACK}-gitlab-revocation-token-`)
  return [prefix, partition, service, REGION, ACCOUNT, resource].join(':')
}

/** Context keys in a fixed order, so that equal contexts dedupe. */
function sortedContext(context) {
  return Object.fromEntries(Object.entries(context).sort(([a], [b]) => a.localeCompare(b)))
}

/** The distinct normalised calls of the functions, each with how many records made it. */
function distinctCalls(calls, stack) {
  const distinct = new Map()
  for (const call of calls) {
    const normalised = {
      function: call.function,
      action: call.action,
      resource: normaliseResource(call.resource, stack),
      context: sortedContext(call.context),
    }
    const key = JSON.stringify(normalised)
    if (distinct.has(key)) distinct.get(key).count += 1
    else distinct.set(key, { ...normalised, count: 1 })
  }
  return [...distinct.values()]
}

// ---------------------------------------------------------------------------------------
// Simulation

/**
 * Evaluates one request against a role. Returns {allowed, allowedBy: [statement ids]} or
 * {error}. A context key that iam-simulate would drop (it does not apply to the action) is an
 * error: the condition would then be evaluated as if the key were missing.
 */
async function simulate(role, action, resource, context) {
  const response = await runSimulation({
    identityPolicies: role.statements.length === 0 ? [] : [{
      name: role.name,
      policy: { Version: '2012-10-17', Statement: role.statements.map((s) => s.statement) },
    }],
    serviceControlPolicies: [],
    resourceControlPolicies: [],
    request: {
      principal: `arn:aws:sts::${ACCOUNT}:assumed-role/${role.name}Role/${role.name}`,
      action,
      resource: { resource, accountId: ACCOUNT },
      contextVariables: context,
    },
  }, {})
  if (response.resultType === 'error') return { error: JSON.stringify(response.errors) }
  if (response.resultType !== 'single') return { error: `a ${response.resultType} result, not a single one` }
  const ignored = response.result.ignoredContextKeys ?? []
  if (ignored.length) return { error: `context keys that do not apply to this action: ${ignored.join(', ')}` }
  const allowStatements = response.result.analysis.identityAnalysis?.allowStatements ?? []
  return {
    allowed: response.overallResult === 'Allowed',
    allowedBy: allowStatements.map((s) => role.bySimulatorId.get(s.explain.identifier)),
    // "<statement id> <action> <resource>" for each action and Resource entry that matched.
    grantsUsed: allowStatements.flatMap(({ explain }) => {
      const id = role.bySimulatorId.get(explain.identifier)
      // A single Action or Resource is explained as one object, a list as an array.
      const matched = (list) => [].concat(list ?? []).filter((entry) => entry.matches)
      return matched(explain.actions).flatMap(({ action }) =>
        matched(explain.resources).map(({ resource }) => `${id} ${action} ${resource}`))
    }),
  }
}

function describeRequest(action, resource, context) {
  return `${action} ${resource} ${JSON.stringify(context)}`
}

// ---------------------------------------------------------------------------------------
// The checks

class Report {
  lines = []
  failures = []
  counts = { calls: 0, distinct: 0, denied: 0, unused: 0, breaches: 0 }
  note(line) { this.lines.push(line) }
  fail(line) { this.lines.push(line); this.failures.push(line) }
  summary() {
    const c = this.counts
    return `iam: ${c.calls} calls checked (${c.distinct} distinct), ${c.denied} denied, ` +
      `${c.unused} statements unused, ${c.breaches} least-privilege breaches`
  }
}

/**
 * Check 1: every recorded call is allowed. Notes on each call which statements allowed it, and
 * returns the ids of all the statements that allowed one.
 */
async function checkCallsAllowed(stack, calls, report) {
  const used = new Set()
  for (const call of calls) {
    const role = stack.roles.get(call.function)
    const request = describeRequest(call.action, call.resource, call.context)
    const result = await simulate(role, call.action, call.resource, call.context)
    if (result.error) {
      report.fail(`error: ${call.function} ${request}: ${result.error}`)
    } else if (!result.allowed) {
      report.counts.denied += 1
      report.fail(`denied: ${call.function} ${request}`)
    }
    call.allowedBy = result.allowedBy ?? []
    for (const grant of result.grantsUsed ?? []) used.add(grant)
  }
  return used
}

/**
 * Check 2: every action of every statement, on every one of its resources, allowed a call;
 * or the statement is the event source mapping's, with exactly the actions that Lambda uses
 * there. `used` holds "<statement id> <action> <resource>" triples.
 */
function checkStatementsUsed(stack, used, report) {
  for (const role of stack.roles.values()) {
    for (const { id, statement } of role.statements) {
      const resources = statement.Resource === undefined ? [] : [].concat(statement.Resource)
      const actions = [].concat(statement.Action ?? statement.NotAction)
      if (statement.NotAction !== undefined || statement.NotResource !== undefined || resources.includes('*')) {
        report.counts.unused += 1
        report.fail(`unused: ${id} grants NotAction, NotResource or every resource, which no call can use up`)
        continue
      }
      if (resources.length > 0 && resources.every((r) => role.mappingResources.has(r))) {
        const allowed = resources.every((r) => r.includes(':sqs:')) ? MAPPING_QUEUE_ACTIONS : MAPPING_STREAM_ACTIONS
        const extra = actions.filter((a) => !allowed.includes(a))
        if (extra.length) {
          report.counts.unused += 1
          report.fail(`unused: ${id} ${extra.join(',')}: the event source mapping uses only ${allowed.join(', ')}`)
        } else {
          report.note(`used by the event source mapping: ${id}`)
        }
        continue
      }
      const idle = actions.flatMap((a) => resources.filter((r) => !used.has(`${id} ${a} ${r}`)).map((r) => `${a} on ${r}`))
      if (idle.length === 0) continue
      report.counts.unused += 1
      report.fail(`unused: ${id} ${idle.join(', ')}`)
    }
  }
}

/** The requests each function's role must deny (check 3). */
function forbiddenRequests(stack, calls) {
  const forbidden = []
  const deny = (fn, action, resource, context = {}) => forbidden.push({ fn, action, resource, context })

  const usage = (environment) => `USAGE#${environment}#key_x`
  for (const fn of KEY_CHECKERS) {
    for (const action of ITEM_WRITES) {
      for (const keys of [['KEY#key_x'], ['HASH#00'], [usage(AUTHORIZER_ENVIRONMENT), 'KEY#key_x'],
        ['USAGE#key_x']]) {
        deny(fn, `dynamodb:${action}`, stack.tableArn, { 'dynamodb:LeadingKeys': keys })
      }
    }
    for (const action of ['PutItem', 'DeleteItem']) {
      deny(fn, `dynamodb:${action}`, stack.tableArn, { 'dynamodb:LeadingKeys': [usage(AUTHORIZER_ENVIRONMENT)] })
    }
  }
  // The exported authorizer counts only its own environment's checks: no other environment's
  // usage, not even one whose name starts with its own.
  for (const other of OTHER_ENVIRONMENTS) {
    deny('Authorizer', 'dynamodb:UpdateItem', stack.tableArn, { 'dynamodb:LeadingKeys': [usage(other)] })
  }

  const secret = (name) => `arn:aws:secretsmanager:${REGION}:${ACCOUNT}:secret:${name}-AbCdEf`
  for (const fn of stack.roles.keys()) {
    const writer = SECRET_WRITERS.includes(fn)
    for (const action of SECRET_ACTIONS) {
      deny(fn, `secretsmanager:${action}`, secret(writer ? 'other/production/x' : `${stack.secretPrefix}production/x`))
    }
    if (writer) deny(fn, 'secretsmanager:GetSecretValue', secret(`${stack.secretPrefix}production/x`))
  }

  for (const [fn, action] of USAGE_ONLY) {
    deny(fn, action, stack.tableArn, { 'dynamodb:LeadingKeys': ['KEY#key_x'] })
  }

  // A statement limited to some partitions by a LeadingKeys condition allows none of its
  // actions on a key's own items.
  for (const role of stack.roles.values()) {
    for (const { statement } of role.statements) {
      if (!JSON.stringify(statement.Condition ?? {}).includes('dynamodb:LeadingKeys')) continue
      for (const action of [].concat(statement.Action)) {
        for (const resource of [].concat(statement.Resource)) {
          deny(role.name, action, resource, { 'dynamodb:LeadingKeys': ['KEY#key_x'] })
        }
      }
    }
  }

  const everyCall = new Map(calls.map((c) => [describeRequest(c.action, c.resource, c.context), c]))
  for (const fn of NO_AWS_CALLS) {
    for (const { action, resource, context } of everyCall.values()) deny(fn, action, resource, context)
  }
  return forbidden
}

/** Check 3: least privilege. */
async function checkLeastPrivilege(stack, calls, report) {
  for (const fn of [...KEY_CHECKERS, ...SECRET_WRITERS, ...NO_AWS_CALLS, ...USAGE_ONLY.map(([fn]) => fn)]) {
    if (!stack.roles.has(fn)) report.fail(`error: the least-privilege checks name ${fn}, which the template lacks`)
  }
  for (const fn of NO_AWS_CALLS) {
    if (stack.roles.get(fn)?.hasPolicies) {
      report.counts.breaches += 1
      report.fail(`breach: ${fn} has Policies, but it makes no AWS call`)
    }
  }
  for (const { fn, action, resource, context } of forbiddenRequests(stack, calls)) {
    const role = stack.roles.get(fn)
    if (!role) continue
    const result = await simulate(role, action, resource, context)
    if (result.error) {
      report.fail(`error: ${fn} ${describeRequest(action, resource, context)}: ${result.error}`)
    } else if (result.allowed) {
      report.counts.breaches += 1
      report.fail(`breach: ${fn} may ${describeRequest(action, resource, context)}`)
    }
  }
}

function explainCalls(stack, calls, report) {
  for (const fn of stack.roles.keys()) {
    const own = calls.filter((c) => c.function === fn)
    if (own.length === 0) continue
    report.note(`${fn}:`)
    for (const c of own) {
      const by = c.allowedBy.length ? c.allowedBy.join(', ') : 'nothing'
      report.note(`  ${describeRequest(c.action, c.resource, c.context)} x${c.count} <- ${by}`)
    }
  }
}

/** Checks 1 to 3 on one template (parsed, unresolved) and the raw call records. */
async function check(template, records, { explain = false } = {}) {
  const report = new Report()
  const stack = describeStack(template)

  const outside = records.filter((r) => r.function === null)
  const unknown = records.filter((r) => r.function !== null && !stack.roles.has(r.function))
  for (const r of unknown) {
    report.fail(`error: ${r.where}: ${r.function} is not an AWS::Serverless::Function of the template`)
  }
  const known = records.filter((r) => r.function !== null && stack.roles.has(r.function))
  const calls = distinctCalls(known, stack)
  Object.assign(report.counts, { calls: known.length, distinct: calls.length })
  report.note(`${outside.length} calls outside any function`)

  const used = await checkCallsAllowed(stack, calls, report)
  checkStatementsUsed(stack, used, report)
  await checkLeastPrivilege(stack, calls, report)
  if (explain) explainCalls(stack, calls, report)
  return report
}

// ---------------------------------------------------------------------------------------
// Mutations (check 4): each must make the check fail.

/** A function's one statement limited by a dynamodb:LeadingKeys condition, unresolved. */
function usageStatement(template, fn) {
  const found = rawStatements(template, fn)
    .filter(({ statement }) => JSON.stringify(statement.Condition ?? null).includes('dynamodb:LeadingKeys'))
  if (found.length !== 1) throw new Fail(`${fn} has ${found.length} statements with a LeadingKeys condition, not one`)
  return found[0].statement
}

/** A function's statements, unresolved, with the Policies element each sits in. */
function rawStatements(template, fn) {
  const policies = template.Resources?.[fn]?.Properties?.Policies
  if (!Array.isArray(policies)) throw new Fail(`${fn} has no Policies list`)
  return policies.flatMap((policy) => {
    if (!Array.isArray(policy?.Statement)) throw new Fail(`${fn} has a Policies element without a Statement list`)
    return policy.Statement.map((statement) => ({ policy, statement }))
  })
}

const MUTATIONS = [
  {
    name: 'dynamodb:GetItem dropped from GetKey',
    caughtAs: 'denied: GetKey dynamodb:GetItem ',
    apply(template) {
      const found = rawStatements(template, 'GetKey')
        .find(({ statement }) => [].concat(statement.Action).includes('dynamodb:GetItem'))
      if (!found) throw new Fail('no statement of GetKey lists dynamodb:GetItem')
      const { policy, statement } = found
      statement.Action = [].concat(statement.Action).filter((a) => a !== 'dynamodb:GetItem')
      if (statement.Action.length === 0) policy.Statement.splice(policy.Statement.indexOf(statement), 1)
    },
  },
  {
    name: 'ListKeys queries gsi1 with the table as its Resource',
    caughtAs: 'denied: ListKeys dynamodb:Query ',
    apply(template) {
      const index = { 'Fn::Sub': '${Table.Arn}/index/gsi1' }
      const table = { 'Fn::GetAtt': ['Table', 'Arn'] }
      const found = rawStatements(template, 'ListKeys').find(({ statement }) =>
        [].concat(statement.Resource).some((r) => isDeepStrictEqual(r, index)))
      if (!found) throw new Fail('no statement of ListKeys has the Resource ${Table.Arn}/index/gsi1')
      const { statement } = found
      statement.Resource = Array.isArray(statement.Resource)
        ? statement.Resource.map((r) => (isDeepStrictEqual(r, index) ? table : r))
        : table
    },
  },
  {
    name: 'the usage condition removed from Authorizer',
    caughtAs: 'breach: Authorizer may dynamodb:UpdateItem ',
    apply(template) {
      delete usageStatement(template, 'Authorizer').Condition
    },
  },
  {
    name: "Authorizer's usage condition widened to every environment (USAGE#*)",
    caughtAs: 'breach: Authorizer may dynamodb:UpdateItem ',
    mentioning: `USAGE#${OTHER_ENVIRONMENTS[0]}#`,
    apply(template) {
      usageStatement(template, 'Authorizer').Condition = {
        'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['USAGE#*'] },
      }
    },
  },
]

/** Runs every mutation; returns the lines to print and whether each was caught. */
async function runMutations(template, records) {
  const lines = []
  let allCaught = true
  for (const mutation of MUTATIONS) {
    const mutated = structuredClone(template)
    try {
      mutation.apply(mutated)
    } catch (error) {
      if (!(error instanceof Fail)) throw error
      allCaught = false
      lines.push(`mutation NOT caught: ${mutation.name} (cannot apply it: ${error.message})`)
      continue
    }
    const report = await check(mutated, records)
    const caught = report.failures.find((failure) => failure.startsWith(mutation.caughtAs) &&
      failure.includes(mutation.mentioning ?? ''))
    if (caught) {
      lines.push(`mutation caught: ${mutation.name} (${caught})`)
    } else {
      allCaught = false
      lines.push(`mutation NOT caught: ${mutation.name}`)
    }
  }
  return { lines, allCaught }
}

// ---------------------------------------------------------------------------------------

async function main() {
  const { values } = parseArgs({
    options: {
      template: { type: 'string' },
      calls: { type: 'string' },
      explain: { type: 'boolean', default: false },
      mutations: { type: 'boolean', default: false },
    },
  })
  if (!values.template || !values.calls) {
    throw new Fail('usage: check.mjs --template TEMPLATE --calls DIR [--explain] [--mutations]')
  }
  const template = loadTemplate(values.template)
  const records = readCalls(values.calls)

  const report = await check(template, records, { explain: values.explain })
  for (const line of report.lines) console.log(line)
  let ok = report.failures.length === 0

  if (values.mutations) {
    if (ok) {
      const { lines, allCaught } = await runMutations(template, records)
      for (const line of lines) console.log(line)
      ok = allCaught
    } else {
      console.log('mutations not run: the template itself fails the check')
    }
  }
  console.log(report.summary())
  return ok
}

try {
  process.exitCode = (await main()) ? 0 : 1
} catch (error) {
  if (!(error instanceof Fail)) throw error
  console.log(`iam: ${error.message}`)
  process.exitCode = 1
}
