// Function App (Flex Consumption, Python 3.11) with a user-assigned managed identity, its storage account
// (host storage + sync state tables and queues), Application Insights with Entra ID (managed identity) ingestion,
// App Service Authentication for the status page, a Key Vault for the secrets (read by the app's identity through
// Key Vault references), and the alert rules of docs/operations.md "Alerts". App settings are written by
// appsettings.bicep: a redeployment keeps every operator-owned setting (docs/deployment.md, "Settings: the
// deployment's and the operator's").
// `azd up` asks only for the parameters infra/main.parameters.json leaves open (the two service URLs and the
// alert e-mail). The identity must also be an application user in Dataverse and a Microsoft Entra application
// in F&O (docs/deployment.md, "Tenant steps Bicep cannot do"): those are tenant steps Bicep cannot do.
targetScope = 'resourceGroup'

@description('Name prefix for every resource (azd: the environment name)')
@minLength(2)
@maxLength(20)
param name string = 'loyaltysync'
param location string = resourceGroup().location
@description('https://<org>.crm.dynamics.com')
param dataverseUrl string
@description('https://<env>.operations.dynamics.com')
param commerceUrl string
// Operator-owned settings with a first value: these parameters are written on the first deployment only
// (appsettings.bicep); afterwards the app setting is the operator's, and a redeployment keeps it.
@description('First value of SYNC_LEGAL_ENTITIES (comma-separated legal entities; empty = all from LegalEntities)')
param legalEntities string = ''
@description('First value of SYNC_DELETE_POLICY')
@allowed(['delete', 'ignore'])
param deletePolicy string = 'delete'
@description('First value of SYNC_CONFLICT_POLICY')
@allowed(['commerce_wins', 'dataverse_wins'])
param conflictPolicy string = 'commerce_wins'

@description('The callback secret to store in Key Vault (secret sync-callback-secret; the app reads it as SYNC_CALLBACK_SECRET through a Key Vault reference). Empty: the secret in the vault is left as it is (set it with az keyvault secret set)')
@secure()
param callbackSecret string = ''

// Storage network rules (docs: deployment, "Storage network rules"). Both empty (the default): the account
// accepts requests from any network, authorised by Entra ID only (shared keys are off), as before. Either set:
// the account denies every other network; the app then reaches it only through its VNet integration
// (appSubnetId, whose subnet must be listed in storageAllowedSubnetIds with the Microsoft.Storage service
// endpoint), and an operator's laptop only from a listed IP range (or through the remote CLI).
@description('Public IP addresses or CIDR ranges allowed to reach the storage account (e.g. an office range); empty and no subnets = every network')
param storageAllowedIpRules array = []
@description('Subnet resource ids allowed to reach the storage account (service endpoint Microsoft.Storage)')
param storageAllowedSubnetIds array = []
@description('Subnet the function app is integrated with (delegated to Microsoft.App/environments); empty = no VNet integration')
param appSubnetId string = ''

@description('Where the alert rules send their e-mail (the action group)')
param alertEmail string
@description('Client id of the Microsoft Entra app registration operators sign in to for the status page; empty = no sign-in (the page then answers 403 in Azure)')
param operatorsAuthClientId string = ''
@description('First value of SYNC_OPERATORS_GROUP_ID: the Entra group whose members may use the status page and the ops endpoints (or use the app role below)')
param operatorsGroupId string = ''
@description('First value of SYNC_OPERATORS_ROLE: the app role (in the app registration above) whose holders may use the status page and the ops endpoints')
param operatorsRole string = 'LoyaltySync.Operator'

// The instance cap and the key-range size go together (docs/throughput.md "Scaling out"): the shared Dataverse budget is
// split among the live instances, so a range's wall time grows with them and must stay well inside the
// 10-minute function timeout. 8 instances with 5,000-key ranges is the recommendation; 40 is the lowest cap
// Microsoft's Flex Consumption samples accept (@minValue(40) there), so it is the default that deploys
// everywhere, with 2,000-key ranges (about 300 s each at 40 instances). Where the plan takes a lower cap
// (inferred: the documented minimum has changed over time), set 8 and 5000.
@description('Most instances the app scales out to (docs/throughput.md "Scaling out")')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40
@description('First value of SYNC_PAGE_SIZE: keys per key range of a full scan or baseline; lower it as the instance cap grows')
@minValue(10)
@maxValue(10000)
param pageSize int = 2000

@description('Templates the "no successful run" alert watches (the file names in mappings/, without .json)')
param templates array = ['loyalty_cards', 'loyalty_card_tiers', 'loyalty_levels', 'loyalty_reward_points', 'loyalty_card_balances']
@description('Those of the templates that are one-way (every field ">"): no Dataverse -> F&O run is expected of them')
param oneWayTemplates array = ['loyalty_card_tiers', 'loyalty_card_balances']
@description('The longest timer period of any template, in minutes (the "schedule" of mappings/*.json)')
param schedulePeriodMinutes int = 15
@description('Alert when a template has had no successful run for this many schedule periods')
param missedRunsBeforeAlert int = 3
@description('Alert when more records than this were parked for one template within an hour')
param parkedPerHourThreshold int = 0
@description('Alert when more than this percentage of one API\'s requests drew a 429 within 15 minutes')
param throttledSharePercent int = 10
@description('First values of SYNC_AUTO_PAUSE_FAILURES and _MINUTES: more than this many failures of one template within autoPauseMinutes pause it (0 = off)')
param autoPauseFailures int = 100
param autoPauseMinutes int = 15

var suffix = uniqueString(resourceGroup().id, name)
var storageName = toLower(take('${replace(name, '-', '')}${suffix}', 24))
var deploymentContainer = 'app-package'
// The Functions host keeps timer schedules and locks in azure-webjobs-hosts and its keys in azure-webjobs-secrets;
// created here so that the identity's blob role can be scoped to these containers instead of the account.
var blobContainers = [deploymentContainer, 'azure-webjobs-hosts', 'azure-webjobs-secrets']
// SYNC_QUEUE_PREFIX is the deployment's (the queues below carry it): each template's callbacks queue and key-range
// queue (shared/state/queues.py) and the poison queue the host moves a message to after 5 failed deliveries.
var queuePrefix = 'loyaltysync'
var queueNames = flatten(map(templates, t => [
  '${queuePrefix}-${replace(t, '_', '-')}'
  '${queuePrefix}-${replace(t, '_', '-')}-poison'
  '${queuePrefix}-pages-${replace(t, '_', '-')}'
  '${queuePrefix}-pages-${replace(t, '_', '-')}-poison'
]))
var restrictStorageNetwork = !empty(storageAllowedIpRules) || !empty(storageAllowedSubnetIds)

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: '${name}-id-${suffix}'
  location: location
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageName
  location: location
  sku: { name: 'Standard_LRS' }
  kind: 'StorageV2'
  properties: {
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    networkAcls: restrictStorageNetwork ? {
      defaultAction: 'Deny'
      bypass: 'AzureServices'
      ipRules: map(storageAllowedIpRules, ip => { value: ip, action: 'Allow' })
      virtualNetworkRules: map(storageAllowedSubnetIds, id => { id: id, action: 'Allow' })
    } : { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
  resource blobService 'blobServices' = {
    name: 'default'
  }
  resource queueService 'queueServices' = {
    name: 'default'
  }
  resource tableService 'tableServices' = {
    name: 'default'
  }
}

resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for c in blobContainers: {
  parent: storage::blobService
  name: c
}]

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for q in queueNames: {
  parent: storage::queueService
  name: q
}]

// The identity's data roles, each scoped to what the app uses (no role on the whole account): Storage Blob Data
// Owner (Microsoft's documented role for AzureWebJobsStorage with a managed identity) on the three containers
// above; Storage Queue Data Contributor on each queue above; Storage Table Data Contributor on the table service:
// the app creates its tables itself, named by SYNC_TABLE_PREFIX (an operator's setting), and `check` lists them,
// so a per-table scope would break on a prefix change. A template added to mappings/ needs its name in the
// `templates` parameter for its queues (and their role) to exist.
var blobDataOwner = 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
var queueDataContributor = '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
var tableDataContributor = '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'

resource containerRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (c, i) in blobContainers: {
  name: guid(containers[i].id, identity.id, blobDataOwner)
  scope: containers[i]
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataOwner)
  }
}]

resource queueRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (q, i) in queueNames: {
  name: guid(queues[i].id, identity.id, queueDataContributor)
  scope: queues[i]
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', queueDataContributor)
  }
}]

resource tableRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage::tableService.id, identity.id, tableDataContributor)
  scope: storage::tableService
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', tableDataContributor)
  }
}

// Secrets: a vault with Azure RBAC (no access policies); the app's identity reads secrets (Key Vault Secrets User),
// App Service resolves the Key Vault references of the app settings with it (keyVaultReferenceIdentity).
var callbackSecretName = 'sync-callback-secret'
resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: take('${replace(name, '-', '')}kv${suffix}', 24)
  location: location
  properties: {
    tenantId: tenant().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
  }
  resource callbackSecretValue 'secrets' = if (!empty(callbackSecret)) {
    name: callbackSecretName
    properties: { value: callbackSecret }
  }
}

var keyVaultSecretsUser = '4633458b-17de-408a-b874-0445c86b69e6'
resource vaultRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, identity.id, keyVaultSecretsUser)
  scope: vault
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', keyVaultSecretsUser)
  }
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${name}-logs-${suffix}'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
    features: { disableLocalAuth: true }
  }
}

// Local (instrumentation key) authentication off: telemetry is accepted only with an Entra token, which the
// host and the OpenTelemetry exporter get for the managed identity (APPLICATIONINSIGHTS_AUTHENTICATION_STRING).
resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${name}-ai-${suffix}'
  location: location
  kind: 'web'
  properties: { Application_Type: 'web', WorkspaceResourceId: logs.id, DisableLocalAuth: true }
}

var monitoringMetricsPublisher = '3913510d-42f4-4e42-8a64-420c390055eb'
resource insightsRoleAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, monitoringMetricsPublisher)
  scope: insights
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisher)
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: '${name}-plan-${suffix}'
  location: location
  kind: 'functionapp'
  sku: { tier: 'FlexConsumption', name: 'FC1' }
  properties: { reserved: true }
}

resource app 'Microsoft.Web/sites@2024-04-01' = {
  name: '${name}-${suffix}'
  location: location
  kind: 'functionapp,linux'
  tags: { 'azd-service-name': 'api' }
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    keyVaultReferenceIdentity: identity.id
    virtualNetworkSubnetId: empty(appSubnetId) ? null : appSubnetId
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainer}'
          authentication: { type: 'UserAssignedIdentity', userAssignedIdentityResourceId: identity.id }
        }
      }
      scaleAndConcurrency: { maximumInstanceCount: maximumInstanceCount, instanceMemoryMB: 2048 }
      runtime: { name: 'python', version: '3.11' }
    }
    // No appSettings here: appsettings.bicep writes them, keeping the operator's (a site PUT that lists
    // appSettings replaces them all). FTP and FTPS off: deployments go through the authenticated deployment API.
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
  }
  dependsOn: [ containerRoleAssignments, queueRoleAssignments, tableRoleAssignment, insightsRoleAssignment,
    vaultRoleAssignment ]
}

// Basic (user name and password) publishing credentials off for the deployment endpoint (scm) and FTP: deployments
// sign in with Entra ID (the workflow's OpenID Connect login, az, azd, Core Tools).
resource scmBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'scm'
  properties: { allow: false }
}

resource ftpBasicAuth 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: app
  name: 'ftp'
  properties: { allow: false }
}

// Settings the deployment owns: every value derives from a resource above or a deployment parameter.
var deploymentOwnedSettings = {
  AzureWebJobsStorage__accountName: storage.name
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  AZURE_CLIENT_ID: identity.properties.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  DATAVERSE_URL: dataverseUrl
  COMMERCE_URL: commerceUrl
  SYNC_STORAGE_TABLE_ENDPOINT: storage.properties.primaryEndpoints.table
  SYNC_STORAGE_QUEUE_ENDPOINT: storage.properties.primaryEndpoints.queue
  SYNC_QUEUE_PREFIX: queuePrefix
  // A Key Vault reference (versionless: the latest version of the secret), never the secret itself.
  SYNC_CALLBACK_SECRET: '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${callbackSecretName}/)'
}

// Operator-owned settings with a first value: written where the site has none (the first deployment).
var operatorDefaultSettings = {
  SYNC_CONFLICT_POLICY: conflictPolicy
  SYNC_LEGAL_ENTITIES: legalEntities
  SYNC_DELETE_POLICY: deletePolicy
  SYNC_OPERATORS_GROUP_ID: operatorsGroupId
  SYNC_OPERATORS_ROLE: operatorsRole
  SYNC_PAGE_SIZE: string(pageSize)
  SYNC_AUTO_PAUSE_FAILURES: string(autoPauseFailures)
  SYNC_AUTO_PAUSE_MINUTES: string(autoPauseMinutes)
}

module appSettings 'appsettings.bicep' = {
  name: '${name}-appsettings'
  params: {
    appName: app.name
    deploymentOwned: deploymentOwnedSettings
    operatorDefaults: operatorDefaultSettings
  }
  dependsOn: [ vault::callbackSecretValue ]
}

// App Service Authentication (Easy Auth) for the status page and the remote CLI's access tokens (audience
// api://<client id>, for /api/ops/entra/*). Anonymous requests still reach the app (the callbacks and
// /api/ops/* keep their keys); the page and /api/ops/entra/* require the signed-in principal
// that Easy Auth injects (X-MS-CLIENT-PRINCIPAL, which external requests cannot set while Easy Auth is on) and
// checks the operators' group or app role. No client secret: sign-in uses the OpenID Connect implicit flow for
// an ID token (enable "ID tokens" on the app registration; docs/deployment.md "Tenant steps Bicep cannot do").
resource auth 'Microsoft.Web/sites/config@2024-04-01' = if (!empty(operatorsAuthClientId)) {
  parent: app
  name: 'authsettingsV2'
  properties: {
    platform: { enabled: true }
    globalValidation: { requireAuthentication: false, unauthenticatedClientAction: 'AllowAnonymous' }
    httpSettings: { requireHttps: true }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: operatorsAuthClientId
          openIdIssuer: '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'
        }
        validation: { allowedAudiences: [ operatorsAuthClientId, 'api://${operatorsAuthClientId}' ] }
      }
    }
  }
}

// ---- Alerts (docs/operations.md "Alerts"): log search rules on the workspace's AppMetrics / AppTraces tables --------------

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: '${name}-alerts-${suffix}'
  location: 'global'
  properties: {
    groupShortName: take('loyaltysync', 12)
    enabled: true
    emailReceivers: [ { name: 'operators', emailAddress: alertEmail, useCommonAlertSchema: true } ]
  }
}

var directions = ['fo_to_dataverse', 'dataverse_to_fo']
// A one-way template (no field flows to F&O) never runs Dataverse -> F&O: only its Commerce -> Dataverse runs count.
var expectedScopes = flatten(map(templates, t => map(contains(oneWayTemplates, t) ? ['fo_to_dataverse'] : directions, d => '${t}/${d}')))

var alerts = [
  {
    key: 'parked-growing'
    displayName: 'Loyalty sync: parked records growing'
    description: 'More than ${parkedPerHourThreshold} records of one template were parked in the last hour (they wait for a replay: docs/operations.md "Runbook").'
    severity: 2
    frequency: 'PT15M'
    window: 'PT1H'
    query: 'AppMetrics | where Name == "loyaltysync.records" and tostring(Properties.outcome) == "parked" | extend template = tostring(Properties.template) | summarize parked = sum(Sum) by template'
    measure: 'parked'
    aggregation: 'Total'
    threshold: parkedPerHourThreshold
    dimension: 'template'
  }
  {
    key: 'no-successful-run'
    displayName: 'Loyalty sync: no successful run'
    description: 'A template and direction has had no completed run for ${missedRunsBeforeAlert} schedule periods (${missedRunsBeforeAlert * schedulePeriodMinutes} minutes).'
    severity: 1
    frequency: 'PT15M'
    window: 'PT${missedRunsBeforeAlert * schedulePeriodMinutes}M'
    query: 'let expected = dynamic(${string(expectedScopes)}); AppMetrics | where Name == "loyaltysync.runs" and tostring(Properties.status) in ("completed", "completed_with_parked") | summarize seen = make_set(strcat(tostring(Properties.template), "/", tostring(Properties.direction))) | mv-expand scope = set_difference(expected, seen) to typeof(string) | project scope, missing = 1'
    measure: 'missing'
    aggregation: 'Total'
    threshold: 0
    dimension: 'scope'
  }
  {
    key: 'poison-messages'
    displayName: 'Loyalty sync: poison messages'
    description: 'Messages that failed every delivery wait in a poison queue (docs/operations.md "Poison messages": inspect and requeue).'
    severity: 2
    frequency: 'PT15M'
    window: 'PT15M'
    query: 'AppMetrics | where Name == "loyaltysync.backlog" and tostring(Properties.kind) == "poison" | extend template = tostring(Properties.template) | summarize poison = max(Max) by template'
    measure: 'poison'
    aggregation: 'Maximum'
    threshold: 0
    dimension: 'template'
  }
  {
    key: 'throttled-share'
    displayName: 'Loyalty sync: high share of 429 responses'
    description: 'More than ${throttledSharePercent}% of one API\'s requests were throttled (429) in 15 minutes: lower SYNC_* concurrency or the instance cap (docs/operations.md "Runbook").'
    severity: 3
    frequency: 'PT5M'
    window: 'PT15M'
    query: 'AppMetrics | where Name == "loyaltysync.http.requests" | extend api = tostring(Properties.api) | summarize total = sum(Sum), throttled = sumif(Sum, tostring(Properties.status_code) == "429") by api | where total > 0 | project api, share_percent = 100.0 * throttled / total'
    measure: 'share_percent'
    aggregation: 'Maximum'
    threshold: throttledSharePercent
    dimension: 'api'
  }
  {
    key: 'auto-paused'
    displayName: 'Loyalty sync: template auto-paused'
    description: 'A burst of failures paused a template (docs/operations.md "Runbook"); its work is held until an operator resumes it.'
    severity: 1
    frequency: 'PT5M'
    window: 'PT15M'
    query: 'AppTraces | where Message startswith "template auto-paused" | extend template = tostring(Properties.template) | summarize pauses = count() by template'
    measure: 'pauses'
    aggregation: 'Total'
    threshold: 0
    dimension: 'template'
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for alert in alerts: {
  name: '${name}-${alert.key}-${suffix}'
  location: location
  properties: {
    displayName: alert.displayName
    description: alert.description
    severity: alert.severity
    enabled: true
    evaluationFrequency: alert.frequency
    windowSize: alert.window
    scopes: [ logs.id ]
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: alert.aggregation
          metricMeasureColumn: alert.measure
          operator: 'GreaterThan'
          threshold: alert.threshold
          dimensions: [ { name: alert.dimension, operator: 'Include', values: [ '*' ] } ]
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: true
    actions: { actionGroups: [ actionGroup.id ] }
  }
}]

// azd turns outputs into environment values: the workflow reads AZURE_FUNCTION_APP_NAME to deploy.
output AZURE_FUNCTION_APP_NAME string = app.name
output AZURE_FUNCTION_APP_URL string = 'https://${app.properties.defaultHostName}'
output STATUS_PAGE_URL string = 'https://${app.properties.defaultHostName}/api/ops/dashboard'
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.properties.clientId
output AZURE_KEY_VAULT_NAME string = vault.name
