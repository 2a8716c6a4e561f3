// Executes a declarative Jenkinsfile with stubbed pipeline steps and prints what happened, as JSON.
//
//   groovy tests/jenkins/harness.groovy JENKINSFILE SCENARIOS.json
//
// SCENARIOS.json: [{"name": "...", "params": {...}, "fail": "text", "files": {"path": "content"}}, ...]
// - params override the Jenkinsfile's parameter defaults (an unknown name is an error, as in Jenkins);
// - the first `sh` step whose script contains "fail" exits non-zero (a failing stage);
// - files are what readFile returns.
// For each scenario the output has the parameter definitions, the options, and the events in order:
// stage entered/skipped (with the agent label it holds, null when none, and the node's name), sh (script text, whether Groovy
// interpolated it, the credential variables bound at the time), input, lock, junit, archiveArtifacts,
// stash/unstash, echo, post blocks, and the build result. tests/unit/test_jenkinsfile.py asserts on it.
//
// Semantics modelled on Jenkins declarative pipelines: a stage runs when its `when` expressions are all
// true; after a failed stage every later stage is skipped; post blocks run always/success/failure by the
// stage's (or the build's) result; stage `environment` is scoped to the stage, `env.X = ...` is global.

import groovy.json.JsonOutput
import groovy.json.JsonSlurper
import org.codehaus.groovy.control.CompilerConfiguration

class StepFailure extends RuntimeException {
    StepFailure(String message) { super(message) }
}

class StageSpec {
    String name
    Object agent          // null: inherit; 'none'; or a Closure evaluated for its label
    Closure when
    Closure environment
    Closure steps
    Closure options
    List<StageSpec> stages
    Map<String, Closure> post = [:]
}

// Delegates for the sections whose words only mean something there; anything else resolves to the script.
class WhenDsl {
    List<Boolean> verdicts = []
    def expression(Closure c) { verdicts << (c() as boolean) }
    def beforeAgent(boolean b) {}
}

class AgentDsl {
    String label
    def label(Object l) { label = l.toString() }
}

class PostDsl {
    Map<String, Closure> post
    def always(Closure c) { post.always = c }
    def success(Closure c) { post.success = c }
    def failure(Closure c) { post.failure = c }
    def unstable(Closure c) { post.unstable = c }
    def aborted(Closure c) { post.aborted = c }
    def cleanup(Closure c) { post.cleanup = c }
}

class EnvView {
    Map global
    List<Map> overlays = []   // stage environment and withCredentials bindings, innermost last

    def getProperty(String name) {
        for (Map layer in overlays.reverse()) {
            if (layer.containsKey(name)) return layer[name]
        }
        return global[name]
    }

    void setProperty(String name, Object value) { global[name] = value?.toString() }
}

abstract class JenkinsDsl extends Script {
    // --- harness state -------------------------------------------------------------------------------
    StageSpec pipelineSpec
    List<StageSpec> collecting = []     // definition phase: the spec whose sections are being read
    Map<String, Object> options = [:]
    List<Map> parameterDefs = []
    List<Map> events = []
    Map scenario = [:]
    EnvView envView
    Map<String, Object> paramValues = [:]
    Map<String, String> capture = null  // environment {} being evaluated: NAME = value goes here
    List<String> stagePath = []
    String node = null          // the label the current stage's agent was asked for (null: holds none)
    String nodeName = null      // the node Jenkins gave for it (env.NODE_NAME): "<label>-<n>", or the label
                                // itself when that names a node given before (a node's name is one of its labels)
    List<String> nodeNames = []
    List<String> locks = []
    boolean failed = false
    boolean failureInjected = false
    String secret = 'harness-s3cret-value'

    // --- definition phase ----------------------------------------------------------------------------
    def pipeline(Closure body) {
        pipelineSpec = new StageSpec(name: '<pipeline>')
        collecting.push(pipelineSpec)
        body()
        collecting.pop()
    }

    def agent(Object how) { collecting.last().agent = (how instanceof Closure) ? how : how.toString() }

    def parameters(Closure body) { body() }
    def choice(Map m) { parameterDefs << [type: 'choice', name: m.name, choices: m.choices, default: m.choices[0]] }
    // In parameters {} these define a parameter; with `value:` (a `build` step's parameters) they are one.
    def string(Map m) {
        if (m.containsKey('value')) return [type: 'string', name: m.name, value: m.value?.toString()]
        parameterDefs << [type: 'string', name: m.name, default: m.defaultValue]
    }
    def booleanParam(Map m) {
        if (m.containsKey('value')) return [type: 'boolean', name: m.name, value: m.value]
        parameterDefs << [type: 'boolean', name: m.name, default: m.defaultValue]
    }

    def triggers(Closure body) { body() }
    def cron(String spec) { options.cron = spec }

    def options(Closure body) {
        if (collecting.last().is(pipelineSpec)) body()
        else collecting.last().options = body  // stage options: evaluated when the stage starts
    }
    def timestamps() { options.timestamps = true }
    def disableConcurrentBuilds() { options.disableConcurrentBuilds = true }
    def logRotator(Map m) { [logRotator: m] }
    def buildDiscarder(Object how) { options.buildDiscarder = how }
    def timeout(Map m) { options.timeout = m }

    def environment(Closure body) { collecting.last().environment = body }
    def when(Closure body) { collecting.last().when = body }
    def steps(Closure body) { collecting.last().steps = body }

    def stages(Closure body) {
        collecting.last().stages = []
        body()
    }

    def stage(String name, Closure body) {
        def spec = new StageSpec(name: name)
        collecting.last().stages << spec
        collecting.push(spec)
        body()
        collecting.pop()
    }

    def post(Closure body) {
        body.delegate = new PostDsl(post: collecting.last().post)
        body.resolveStrategy = Closure.DELEGATE_FIRST
        body()
    }

    // `NAME = value` inside environment {}: captured, not a script variable.
    void setProperty(String name, Object value) {
        if (capture != null) capture[name] = value?.toString()
        else super.setProperty(name, value)
    }

    // Jenkins resolves a bare name that is no variable to the environment (so "$FOO" in a GString works).
    def getProperty(String name) {
        try {
            return super.getProperty(name)
        } catch (MissingPropertyException e) {
            def value = envView?.getProperty(name)
            if (value == null) throw e
            return value
        }
    }

    // --- steps ---------------------------------------------------------------------------------------
    Map event(String type, Map fields) {
        def e = [type: type, stage: stagePath.join('/'), node: node, node_name: nodeName] + fields
        events << e
        return e
    }

    void needNode(String step) {
        if (node == null) throw new StepFailure("${step} needs a node, but stage ${stagePath.join('/')} holds none")
    }

    def sh(Object script) {
        def text = (script instanceof Map) ? script.script : script
        needNode('sh')
        def bound = envView.@overlays.findAll { it.__credentials__ }.collectMany { it.keySet() - '__credentials__' }
        event('sh', [script: text.toString(), interpolated: text instanceof GString, credentials: bound,
                     locks: locks.clone()])
        if (scenario.fail && !failureInjected && text.toString().contains(scenario.fail)) {
            failureInjected = true
            throw new StepFailure("script returned exit code 1: ${text}")
        }
        return ''
    }

    def echo(Object message) { event('echo', [message: message.toString()]) }
    def error(Object message) { throw new StepFailure(message.toString()) }
    def script(Closure body) { body() }
    def timeout(Map m, Closure body) { body() }

    def usernamePassword(Map m) { [kind: 'usernamePassword'] + m }
    def file(Map m) { [kind: 'file'] + m }

    def withCredentials(List bindings, Closure body) {
        needNode('withCredentials')
        def layer = [__credentials__: true]
        bindings.each { b ->
            if (b.kind == 'file') {  // a secret file: its variable holds the path of a temporary copy
                layer[b.variable] = "/harness/secret-files/${b.credentialsId}".toString()
            } else {
                layer[b.usernameVariable] = 'harness-user'
                layer[b.passwordVariable] = secret
            }
        }
        event('withCredentials', [bindings: bindings])
        envView.@overlays << layer
        try { body() } finally { envView.@overlays.remove(envView.@overlays.size() - 1) }
    }

    // lock in a stage's options: held for the whole stage, taken before its agent.
    def lock(Map m) {
        event('lock', [resource: m.resource.toString()])
        locks << m.resource.toString()
    }

    def lock(Map m, Closure body) {
        event('lock', [resource: m.resource.toString()])
        locks << m.resource.toString()
        try { body() } finally { locks.remove(locks.size() - 1) }
    }

    // An SSH key through ssh-agent: its variable holds a socket path, never the key.
    def sshagent(Map m, Closure body) {
        needNode('sshagent')
        event('sshagent', [credentials: m.credentials.collect { it.toString() }])
        envView.@overlays << [__credentials__: true, SSH_AUTH_SOCK: '/harness/ssh-agent.sock']
        try { body() } finally { envView.@overlays.remove(envView.@overlays.size() - 1) }
    }

    def readJSON(Map m) { new JsonSlurper().parseText(readFile(m.file).toString()) }
    def sleep(Map m) { event('sleep', [args: m]) }

    // Another job: the first `build` of a job named in scenario.missing_jobs fails (not made yet), as Jenkins does.
    def build(Map m) {
        def job = m.job.toString()
        def missing = (scenario.missing_jobs ?: []) as List
        event('build', [job: job, wait: m.wait, parameters: (m.parameters ?: []).collect { it }])
        if (missing.contains(job) && !attempted.contains(job)) {
            attempted << job
            throw new StepFailure("No item named ${job} found")
        }
    }
    Set<String> attempted = [] as Set

    def retry(int count, Closure body) {
        for (int i = 1; ; i++) {
            try { return body() } catch (StepFailure e) { if (i >= count) throw e }
        }
    }

    def input(Map m) { event('input', [message: m.message.toString(), ok: m.ok]) }
    def junit(Map m) { needNode('junit'); event('junit', [args: m]) }
    def archiveArtifacts(Map m) { needNode('archiveArtifacts'); event('archiveArtifacts', [args: m]) }
    def stash(Map m) { needNode('stash'); event('stash', [args: m]) }
    def unstash(String name) { needNode('unstash'); event('unstash', [name: name]) }
    def dir(String path, Closure body) { needNode('dir'); event('dir', [path: path]); body() }
    def deleteDir() { needNode('deleteDir'); event('deleteDir', [:]) }

    def readFile(Object path) {
        needNode('readFile')
        def files = scenario.files ?: [:]
        if (!files.containsKey(path.toString())) throw new StepFailure("readFile: no file ${path}")
        return files[path.toString()]
    }

    // --- execution -------------------------------------------------------------------------------------
    void start(EnvView env) {
        envView = env
        binding.setVariable('env', env)
        binding.setVariable('params', paramValues)
        binding.setVariable('none', 'none')  // `agent none`
    }

    Map execute(Map scenario) {
        this.scenario = scenario
        parameterDefs.each { paramValues[it.name] = it.default }
        (scenario.params ?: [:]).each { k, v ->
            if (!parameterDefs.find { it.name == k }) throw new IllegalArgumentException("no parameter ${k}")
            paramValues[k] = v
        }
        paramValues.each { k, v -> envView.@global[k] = v.toString() }  // Jenkins exposes parameters as env
        if (pipelineSpec.environment) envView.@global.putAll(evalEnvironment(pipelineSpec.environment))
        runStages(pipelineSpec.stages)
        runPost(pipelineSpec, failed ? 'failure' : 'success')
        return [name: scenario.name, result: failed ? 'FAILURE' : 'SUCCESS', parameters: parameterDefs,
                options: options, top_agent: pipelineSpec.agent instanceof String ? pipelineSpec.agent : 'closure',
                stage_tree: tree(pipelineSpec.stages), events: events]
    }

    List<Map> tree(List<StageSpec> specs) {
        specs.collect { [name: it.name, stages: it.stages == null ? null : tree(it.stages)] }
    }

    Map evalEnvironment(Closure body) {
        capture = [:]
        try {
            body()
            return capture
        } finally {
            capture = null
        }
    }

    void runStages(List<StageSpec> specs) {
        specs.each { runStage(it) }
    }

    boolean whenHolds(Closure body) {
        def conditions = new WhenDsl()
        body.delegate = conditions
        body.resolveStrategy = Closure.DELEGATE_FIRST
        body()
        return conditions.verdicts.every()
    }

    String agentLabel(Object agent) {
        if (agent == null) return node           // inherit
        if (agent == 'none') return null
        if (agent instanceof Closure) {
            def a = new AgentDsl()
            agent.delegate = a
            agent.resolveStrategy = Closure.DELEGATE_FIRST
            agent()
            return a.label
        }
        throw new IllegalArgumentException("agent ${agent} is not modelled")
    }

    void runStage(StageSpec spec) {
        stagePath.push(spec.name)
        try {
            if (failed) {
                event('stage', [status: 'skipped-after-failure'])
                return
            }
            if (spec.when && !whenHolds(spec.when)) {
                event('stage', [status: 'skipped-when'])
                return
            }
            def heldLocks = locks.size()
            if (spec.options) spec.options()  // Jenkins: stage options before the agent and `when`
            def outerNode = node
            def outerName = nodeName
            node = agentLabel(spec.agent)
            if (node != null && outerNode == null) {
                nodeName = (node in nodeNames) ? node : "${node}-${nodeNames.size() + 1}".toString()
                nodeNames << nodeName
                envView.@global.NODE_NAME = nodeName
                envView.@global.WORKSPACE = "/ws/${nodeName}/${spec.name}".toString()
            }
            def overlay = spec.environment ? evalEnvironment(spec.environment) : [:]
            envView.@overlays << overlay
            event('stage', [status: 'run', nested: spec.stages != null])
            boolean stageFailed = false
            try {
                if (spec.stages != null) {
                    runStages(spec.stages)
                    stageFailed = failed
                } else {
                    spec.steps()
                }
            } catch (StepFailure e) {
                stageFailed = true
                failed = true
                event('failure', [message: e.message])
            }
            runPost(spec, stageFailed ? 'failure' : 'success')
            envView.@overlays.remove(overlay)
            node = outerNode
            nodeName = outerName
            while (locks.size() > heldLocks) locks.remove(locks.size() - 1)
        } finally {
            stagePath.pop()
        }
    }

    void runPost(StageSpec spec, String outcome) {
        ['always', outcome, 'cleanup'].each { c ->
            if (spec.post[c]) {
                event('post', [condition: c])
                try {
                    spec.post[c]()
                } catch (StepFailure e) {
                    failed = true
                    event('failure', [message: "post ${c}: ${e.message}".toString()])
                }
            }
        }
    }
}

if (args.length != 2) {
    System.err.println('usage: groovy harness.groovy JENKINSFILE SCENARIOS.json')
    System.exit(2)
}
def jenkinsfile = new File(args[0])
def scenarios = new JsonSlurper().parse(new File(args[1]))
def config = new CompilerConfiguration()
config.scriptBaseClass = JenkinsDsl.name
def shell = new GroovyShell(this.class.classLoader, new Binding(), config)
def results = scenarios.collect { scenario ->
    // A class name of its own: the file name (release-watch.Jenkinsfile) is no Java name.
    JenkinsDsl script = (JenkinsDsl) shell.parse(jenkinsfile.text, "Jenkinsfile_" + jenkinsfile.name.replaceAll(/\W/, "_"))
    def env = new EnvView(global: [BUILD_NUMBER: '42', BUILD_TAG: 'jenkins-gracectl-42', JOB_NAME: 'gracectl',
                                   PATH: '/usr/bin:/bin'])
    script.start(env)
    script.run()  // the definition phase: pipeline {} collects the spec
    script.execute(scenario)
}
println JsonOutput.prettyPrint(JsonOutput.toJson(results))
