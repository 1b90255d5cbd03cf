package apihammer;

import static io.gatling.javaapi.core.CoreDsl.*;
import static io.gatling.javaapi.http.HttpDsl.*;

import io.gatling.javaapi.core.PopulationBuilder;
import io.gatling.javaapi.core.ScenarioBuilder;
import io.gatling.javaapi.core.Session;
import io.gatling.javaapi.core.Simulation;
import io.gatling.javaapi.http.HttpProtocolBuilder;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.time.Duration;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Three scenarios in parallel against the gateway: create-then-read, search, and search
 * without a term (400). Afterwards the warrior count must have grown by exactly the number of
 * 201s received, and no request may have failed.
 *
 * <p>Settings (system property, else environment variable): {@code gatewayUrl}/{@code
 * GATEWAY_URL} (default http://127.0.0.1:9999), {@code profile}/{@code PROFILE}: {@code full}
 * (default, ~11 min of injection), {@code short} (same shape, every phase 15% as long and
 * ramps to 20% of the peak rates: under 2 min) or {@code peak} (the full profile's busiest
 * minute held: the rates it reaches as creation ends, after a 20 s ramp; for measuring a
 * change where the full profile saturates the machine, in under 2 min).
 */
public class ApiUnderStress extends Simulation {

  private static final String GATEWAY_URL =
      setting("gatewayUrl", "GATEWAY_URL", "http://127.0.0.1:9999");
  private static final String PROFILE = setting("profile", "PROFILE", "full");
  private static final boolean SHORT = PROFILE.equals("short");
  private static final boolean PEAK = PROFILE.equals("peak");
  private static final double TIME_SCALE = SHORT ? 0.15 : 1;
  private static final double PEAK_SCALE = SHORT ? 0.2 : 1;

  /** Warriors counted before the run (-1 until read), and 201s received to POST /warrior. */
  private final AtomicLong countBefore = new AtomicLong(-1);
  private final AtomicLong created = new AtomicLong();

  private final HttpProtocolBuilder httpProtocol =
      http.baseUrl(GATEWAY_URL)
          .acceptHeader("application/json")
          .userAgentHeader("api-hammer-gatling")
          // Gatling's warm-up request goes to an outside site by default.
          .disableWarmUp();

  private final ScenarioBuilder readCountBefore =
      scenario("count before")
          .exec(http("count before").get("/counting-warriors").check(countField().saveAs("count")))
          .exec(session -> {
            countBefore.set(session.getLong("count"));
            return session;
          });

  private final ScenarioBuilder creationAndLookup =
      scenario("creation and lookup")
          .feed(csv("warriors.csv").circular())
          .exec(
              http("create")
                  .post("/warrior")
                  .header("Content-Type", "application/json")
                  // A function, not "#{payload}": the body is sent as is, never parsed as EL.
                  .body(StringBody(session -> session.getString("payload")))
                  .check(status().in(201, 422, 400).saveAs("status"))
                  .checkIf((response, session) -> response.status().code() == 201)
                  .then(header("Location").saveAs("location")))
          .exec(session -> {
            if (session.contains("status") && session.getInt("status") == 201) {
              created.incrementAndGet();
            }
            return session;
          })
          .pause(Duration.ofMillis(1), Duration.ofMillis(30))
          .doIf(session -> session.contains("location"))
          .then(exec(http("lookup").get("#{location}")));

  private final ScenarioBuilder validLookup =
      scenario("valid look up")
          .feed(csv("terms.csv").circular())
          .exec(http("search").get("/warrior").queryParam("t", "#{term}").check(status().is(200)));

  private final ScenarioBuilder invalidLookup =
      scenario("invalid look up")
          .exec(http("search without term").get("/warrior").check(status().is(400)));

  /**
   * Runs once creation is over: gives the projection 3 s, then compares the count. A run in which
   * no create got its 201 fails too: an unchanged count would otherwise "match" nothing created.
   */
  private final ScenarioBuilder countCheck =
      scenario("count check")
          .pause(Duration.ofSeconds(3))
          .exec(
              http("count after")
                  .get("/counting-warriors")
                  .check(countField().saveAs("count"))
                  .check(countField().is(session -> expectedCount())))
          .exec(session -> {
            long expected = countBefore.get() + created.get();
            Long actual = session.contains("count") ? session.getLong("count") : null;
            System.out.printf(
                "COUNT CHECK: before=%d created(201)=%d expected=%d actual=%s -> %s%n",
                countBefore.get(), created.get(), expected, actual,
                created.get() == 0 ? "NOTHING CREATED" : Long.valueOf(expected).equals(actual) ? "OK" : "MISMATCH");
            return session;
          });

  /** The count the run must end with; -1 (never a count) when no create succeeded. */
  private long expectedCount() {
    return created.get() > 0 ? countBefore.get() + created.get() : -1L;
  }

  {
    if (!SHORT && !PEAK && !PROFILE.equals("full")) {
      throw new IllegalArgumentException("profile must be full, short or peak, not " + PROFILE);
    }
    setUp(PEAK ? peakMinute() : profileShape())
        .protocols(httpProtocol)
        .assertions(global().failedRequests().count().is(0L));
  }

  /** The full (or, scaled, the short) profile: three ramps, as users run it. */
  private PopulationBuilder profileShape() {
    return readCountBefore
        .injectOpen(atOnceUsers(1))
        .andThen(
            creationAndLookup
                .injectOpen(
                    constantUsersPerSec(2).during(seconds(10)),
                    constantUsersPerSec(5).during(seconds(15)).randomized(),
                    rampUsersPerSec(4).to(peak(1000)).during(seconds(300)))
                .andThen(countCheck.injectOpen(atOnceUsers(1))),
            validLookup.injectOpen(
                constantUsersPerSec(10).during(seconds(75)),
                rampUsersPerSec(8).to(peak(1000)).during(seconds(600))),
            invalidLookup.injectOpen(
                constantUsersPerSec(8).during(seconds(45)),
                rampUsersPerSec(6).to(peak(400)).during(seconds(300))));
  }

  /**
   * The full profile at its 325th second, when creation peaks: 1,000 creations per second, and
   * searches with and without a term at the rates their ramps have reached by then (~421 and
   * ~374 per second).
   */
  private PopulationBuilder peakMinute() {
    Duration ramp = Duration.ofSeconds(20);
    Duration hold = Duration.ofSeconds(60);
    double searches = 8 + (1000 - 8) * (325.0 - 75) / 600;
    double withoutTerm = 6 + (400 - 6) * (325.0 - 45) / 300;
    return readCountBefore
        .injectOpen(atOnceUsers(1))
        .andThen(
            creationAndLookup
                .injectOpen(rampUsersPerSec(4).to(1000).during(ramp), constantUsersPerSec(1000).during(hold))
                .andThen(countCheck.injectOpen(atOnceUsers(1))),
            validLookup.injectOpen(
                rampUsersPerSec(10).to(searches).during(ramp), constantUsersPerSec(searches).during(hold)),
            invalidLookup.injectOpen(
                rampUsersPerSec(8).to(withoutTerm).during(ramp), constantUsersPerSec(withoutTerm).during(hold)));
  }

  /** A second reading once everything stopped, to tell projection lag from lost writes. */
  @Override
  public void after() {
    try {
      var response = HttpClient.newHttpClient().send(
          HttpRequest.newBuilder(URI.create(GATEWAY_URL + "/counting-warriors")).build(),
          HttpResponse.BodyHandlers.ofString());
      System.out.printf("COUNT AT END: %s (expected %d)%n",
          response.body(), countBefore.get() + created.get());
    } catch (Exception e) {
      System.out.println("COUNT AT END: unavailable: " + e);
    }
  }

  private static io.gatling.javaapi.core.CheckBuilder.MultipleFind<Long> countField() {
    return jsonPath("$.count").ofLong();
  }

  private static Duration seconds(double fullProfileSeconds) {
    return Duration.ofMillis(Math.round(fullProfileSeconds * TIME_SCALE * 1000));
  }

  private static double peak(double fullProfileRate) {
    return fullProfileRate * PEAK_SCALE;
  }

  private static String setting(String property, String env, String fallback) {
    String value = System.getProperty(property, System.getenv(env));
    return value == null || value.isBlank() ? fallback : value;
  }
}
