// Function App (Flex Consumption, Python 3.11) with a user-assigned managed identity, its storage account
// (host storage + sync state tables and queues), Application Insights with Entra ID (managed identity) ingestion,
// App Service Authentication for the status page, and the alert rules of docs/operations.md "Alerts".
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
@description('Comma-separated legal entities for company-specific templates; empty = all from LegalEntities')
param legalEntities string = ''
@allowed(['delete', 'ignore'])
param deletePolicy string = 'delete'
@allowed(['commerce_wins', 'dataverse_wins'])
param conflictPolicy string = 'commerce_wins'

@description('Where the alert rules send their e-mail (the action group)')
param alertEmail string
@description('Client id of the Microsoft Entra app registration operators sign in to for the status page; empty = no sign-in (the page then answers 403 in Azure)')
param operatorsAuthClientId string = ''
@description('Object id of the Entra group whose members may use the status page (or use the app role below)')
param operatorsGroupId string = ''
@description('App role (in the app registration above) whose holders may use the status page')
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
@description('SYNC_PAGE_SIZE: keys per key range of a full scan or baseline; lower it as the instance cap grows')
@minValue(10)
@maxValue(10000)
param pageSize int = 2000

@description('Templates the "no successful run" alert watches (the file names in mappings/, without .json)')
param templates array = ['loyalty_cards', 'loyalty_levels', 'loyalty_reward_points']
@description('The longest timer period of any template, in minutes (the "schedule" of mappings/*.json)')
param schedulePeriodMinutes int = 15
@description('Alert when a template has had no successful run for this many schedule periods')
param missedRunsBeforeAlert int = 3
@description('Alert when more records than this were parked for one template within an hour')
param parkedPerHourThreshold int = 0
@description('Alert when more than this percentage of one API\'s requests drew a 429 within 15 minutes')
param throttledSharePercent int = 10
@description('Auto-pause: more than this many failures of one template within autoPauseMinutes pause it (0 = off)')
param autoPauseFailures int = 100
param autoPauseMinutes int = 15

var suffix = uniqueString(resourceGroup().id, name)
var storageName = toLower(take('${replace(name, '-', '')}${suffix}', 24))
var deploymentContainer = 'app-package'

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
  }
  resource blobService 'blobServices' = {
    name: 'default'
    resource container 'containers' = { name: deploymentContainer }
  }
}

// The host's storage needs Storage Blob Data Owner (Microsoft's documented role for AzureWebJobsStorage with a
// managed identity); Queue Data Contributor for the queue triggers and our queues; Table Data Contributor for
// the sync state tables.
var storageRoles = [
  'b7e6dc6d-f1e8-4753-8033-0f276bb0955b' // Storage Blob Data Owner
  '974c5e8b-45b9-4653-ba55-5f855dd0fb88' // Storage Queue Data Contributor
  '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3' // Storage Table Data Contributor
]
resource storageRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in storageRoles: {
  name: guid(storage.id, identity.id, role)
  scope: storage
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

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
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: [
        { name: 'AzureWebJobsStorage__accountName', value: storage.name }
        { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
        { name: 'AzureWebJobsStorage__clientId', value: identity.properties.clientId }
        { name: 'AZURE_CLIENT_ID', value: identity.properties.clientId }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identity.properties.clientId};Authorization=AAD' }
        { name: 'DATAVERSE_URL', value: dataverseUrl }
        { name: 'COMMERCE_URL', value: commerceUrl }
        { name: 'SYNC_STORAGE_TABLE_ENDPOINT', value: storage.properties.primaryEndpoints.table }
        { name: 'SYNC_STORAGE_QUEUE_ENDPOINT', value: storage.properties.primaryEndpoints.queue }
        { name: 'SYNC_QUEUE_PREFIX', value: 'loyaltysync' }
        { name: 'SYNC_CONFLICT_POLICY', value: conflictPolicy }
        { name: 'SYNC_LEGAL_ENTITIES', value: legalEntities }
        { name: 'SYNC_DELETE_POLICY', value: deletePolicy }
        { name: 'SYNC_OPERATORS_GROUP_ID', value: operatorsGroupId }
        { name: 'SYNC_OPERATORS_ROLE', value: operatorsRole }
        { name: 'SYNC_PAGE_SIZE', value: string(pageSize) }
        { name: 'SYNC_AUTO_PAUSE_FAILURES', value: string(autoPauseFailures) }
        { name: 'SYNC_AUTO_PAUSE_MINUTES', value: string(autoPauseMinutes) }
      ]
    }
  }
  dependsOn: [ storageRoleAssignments, insightsRoleAssignment ]
}

// App Service Authentication (Easy Auth) for the status page. Anonymous requests still reach the app (the
// callbacks and the ops endpoints keep their function keys); the page itself requires the signed-in principal
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
var expectedScopes = flatten(map(templates, t => map(directions, d => '${t}/${d}')))

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
